"""Retention: a job's own `expires_after` (seconds after it ends), a file's `expires_at`
(its upload's expires_after), indexes the sweep reads by, and the tombstones of what
it deleted (common/swept.py), so that a swept id answers 404 saying it expired; and batch error
files' purpose becomes `batch_output`, the one OpenAI gives them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("expires_after_s", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.create_index("ix_jobs_expiring", "jobs", ["finished_at"],
                    postgresql_where=sa.text("expires_after_s IS NOT NULL"),
                    sqlite_where=sa.text("expires_after_s IS NOT NULL"))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.create_index("ix_files_created_at", "files", ["created_at"])
    op.create_table(
        "swept",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("expired_at", UTCDateTime(), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("swept_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_swept_swept_at", "swept", ["swept_at"])
    # A batch's error file had a purpose OpenAI's schema does not list; it is
    # `batch_output`, as OpenAI names both of a batch's files.
    op.execute("UPDATE files SET purpose = 'batch_output' WHERE purpose = 'batch_error'")


def downgrade() -> None:
    op.execute("UPDATE files SET purpose = 'batch_error' WHERE batch_id IS NOT NULL "
               "AND filename LIKE '%\\_error.jsonl' ESCAPE '\\'")
    op.drop_index("ix_swept_swept_at", table_name="swept")
    op.drop_table("swept")
    op.drop_index("ix_files_created_at", table_name="files")
    op.drop_index("ix_files_expires_at", table_name="files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("expires_at")
    op.drop_index("ix_jobs_expiring", table_name="jobs")
    op.drop_index("ix_jobs_finished", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("expires_after_s")
