"""Database models of the OpenAI-compatible files and batches.

Files live in the database, cut into parts of a few MiB: the API may run where it has
no persistent disk (Railway), and parts let a 200 MB file be written and read back
without holding it whole in memory. A batch's lines are ordinary jobs (jobs.batch_id,
jobs.custom_id); the batch row holds what the OpenAI Batch API shows, and a claim
that one API process takes while it validates, enqueues or finalizes the batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, utcnow

PART_BYTES = 4 * 1024 * 1024


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_owner_id", "owner_id", "id"),
        Index("ix_files_batch", "batch_id"),
        Index("ix_files_expires_at", "expires_at"),
        Index("ix_files_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column("bytes", Integer, default=0)
    parts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The batch whose output or error file this is (NULL for uploads).
    batch_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # When the retention sweep deletes it (the upload's expires_after); NULL: after
    # MONKEY_RETENTION_DAYS from created_at.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class FilePart(Base):
    __tablename__ = "file_parts"

    file_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_owner_id", "owner_id", "id"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    # Validation errors: [{code, message, param, line}]
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    output_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    error_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    request_total: Mapped[int] = mapped_column(Integer, default=0)
    request_completed: Mapped[int] = mapped_column(Integer, default=0)
    request_failed: Mapped[int] = mapped_column(Integer, default=0)
    # Lines already written as jobs: enqueuing resumes from here after a crash.
    lines_enqueued: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    in_progress_at: Mapped[datetime | None] = mapped_column(default=None)
    finalizing_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    expired_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelling_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    # Whoever validates, enqueues or finalizes holds the claim and renews it as it goes;
    # a claim that lapsed (its API process died) is taken over by the reconciler.
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    # Called when the batch ends (common/webhooks.py); `completed` until it is handed over.
    webhook: Mapped[str | None] = mapped_column(Text, default=None)
    webhook_next: Mapped[str | None] = mapped_column(String(16), default=None)


__all__ = ["PART_BYTES", "Batch", "File", "FilePart"]
