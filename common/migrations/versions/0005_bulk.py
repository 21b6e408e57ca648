"""An index for a batch's lines by status: whether any line of a batch is still active
(a worker asks when it finishes a chunk, the control process before finalizing) and a
batch's request counts are then a few index probes, not a scan of its 50,000 lines.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_batch_status", "jobs", ["batch_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_status", table_name="jobs")
