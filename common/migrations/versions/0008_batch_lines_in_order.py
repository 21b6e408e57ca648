"""A batch's lines in line order: the index on `jobs.batch_id` becomes (batch_id, id).

The batch engine reads a batch's lines in pages of id order (line order) after the last
one it wrote, while the batch runs and at finalize. With `batch_id` alone the database
read every line of the batch and sorted them for each page (12 ms a page at 20,000
lines on SQLite, every 0.25 s while the lines run); with (batch_id, id) a page is a
range of the index. `ix_jobs_batch_status` (batch_id, status) still serves lookups by
batch, so the old index goes. On Postgres the new index is built CONCURRENTLY: a large
jobs table keeps taking writes meanwhile.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_jobs_batch_line", "jobs", ["batch_id", "id"], if_not_exists=True,
                        postgresql_concurrently=True)
        op.drop_index("ix_jobs_batch", table_name="jobs", if_exists=True,
                      postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_jobs_batch", "jobs", ["batch_id"], if_not_exists=True,
                        postgresql_concurrently=True)
        op.drop_index("ix_jobs_batch_line", table_name="jobs", if_exists=True,
                      postgresql_concurrently=True)
