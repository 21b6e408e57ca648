"""An index for the per-key cap on queued jobs.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_status", "jobs", ["owner_id", "status", "priority"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_status", table_name="jobs")
