"""Tombstones of what the retention sweep deleted (api/retention.py): a swept id
answers 404 saying that it expired, when and under which rule, instead of a bare
"not found". A tombstone is a few dozen bytes; it is itself swept after
MONKEY_RETENTION_TOMBSTONE_DAYS.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, utcnow


class Swept(Base):
    __tablename__ = "swept"
    __table_args__ = (Index("ix_swept_swept_at", "swept_at"),)

    # The job (a response's is its job's: job_X for resp_X), batch or file id.
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # job | response | batch | file
    owner_id: Mapped[str] = mapped_column(String(40))
    # When it became due, and the rule that made it so ("MONKEY_RETENTION_DAYS=30",
    # "expires_after=3600"): the 404's message says both.
    expired_at: Mapped[datetime] = mapped_column()
    rule: Mapped[str] = mapped_column(String(64))
    swept_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = ["Swept"]
