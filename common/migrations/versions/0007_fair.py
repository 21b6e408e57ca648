"""Fair share between keys: a weight per API key, and jobs held back from the broker.

- `api_keys.weight`: a key's share of the queue against other busy keys (its window of
  jobs waiting on the broker, interactive and batch, is the window times its weight).
- `jobs.held_at`: set while a queued job is held back in the database instead of
  waiting on the broker (its key is past its interactive window, or at its cap of
  running jobs); the control process publishes it when its key has room. A held job
  has no task message, and the reconciler does not count it as lost. The partial index
  finds the held jobs of a key, oldest first, without reading the rest (a held job
  that ends, cancelled or expired, leaves it with its status).

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("weight", sa.Float(), nullable=False,
                                        server_default=sa.text("1")))
    op.add_column("jobs", sa.Column("held_at", UTCDateTime(), nullable=True))
    op.create_index("ix_jobs_held", "jobs", ["owner_id", "priority", "id"],
                    postgresql_where=sa.text("status = 'queued' AND held_at IS NOT NULL"),
                    sqlite_where=sa.text("status = 'queued' AND held_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_jobs_held", table_name="jobs")
    op.drop_column("jobs", "held_at")
    op.drop_column("api_keys", "weight")
