"""The Responses API's rows (a response is a job; this is what only it shows), and
signed webhooks: a job's own webhook URL, the per-key secrets and the delivery log.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("previous_response_id", sa.String(48), nullable=True),
        sa.Column("instructions", sa.Text(), nullable=True),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("conversation", sa.JSON(), nullable=False),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("store", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_responses_owner_id", "responses", ["owner_id", "job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhook", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_events", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("webhook_next", sa.String(16), nullable=True))
    op.create_index("ix_jobs_webhook_next", "jobs", ["webhook_next"],
                    postgresql_where=sa.text("webhook_next IS NOT NULL"),
                    sqlite_where=sa.text("webhook_next IS NOT NULL"))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("webhook", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_next", sa.String(16), nullable=True))
    op.create_table(
        "webhook_secrets",
        sa.Column("owner_id", sa.String(40), primary_key=True),
        sa.Column("secret", sa.String(80), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.UniqueConstraint("subject_id", "type", "url", "endpoint_id",
                            name="uq_webhook_deliveries_event"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries",
                    ["endpoint_id", "id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("scanned_until", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_webhook_endpoints_owner_id", "webhook_endpoints", ["owner_id", "id"])
    # An endpoint's scan: the key's jobs that ended since it last looked.
    op.create_index("ix_jobs_owner_finished", "jobs", ["owner_id", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_finished", table_name="jobs")
    op.drop_table("webhook_endpoints")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_secrets")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("webhook_next")
        batch.drop_column("webhook")
    op.drop_index("ix_jobs_webhook_next", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_next")
        batch.drop_column("webhook_events")
        batch.drop_column("webhook")
    op.drop_index("ix_responses_owner_id", table_name="responses")
    op.drop_table("responses")
