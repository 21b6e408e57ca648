"""Marks the jobs the fast path sent as published (`published_at`), in one UPDATE per
flush interval rather than one per request. Until marked, the reconciler leaves a
young job alone (and a duplicate it sends would be harmless anyway).

A native job is marked in its own INSERT instead (Producer.premark): then only a
failed send costs an UPDATE here, the one that unmarks it for the reconciler."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import Job
from common.jobs import JobStatus

log = logging.getLogger("monkey.producer")


class PublishMarks:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, flush_s: float = 0.5):
        self.sessions = sessions
        self.flush_s = flush_s
        self._sent: dict[str, datetime] = {}  # job id -> when it went out
        self._unsent: set[str] = set()  # marked in their INSERT, but their send failed
        self._flusher: asyncio.Task[None] | None = None

    def add(self, job_id: str, sent_at: datetime) -> None:
        self._sent[job_id] = sent_at

    def unmark(self, job_id: str) -> None:
        self._unsent.add(job_id)

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="publish-marker")

    async def flush(self) -> int:
        await self._flush_unsent()
        sent, self._sent = self._sent, {}
        if not sent:
            return 0
        ids = list(sent)
        try:
            async with self.sessions() as s:
                # The earliest send time of the lot: a mark that lands after the
                # reconciler found Redis emptied must still look older than that.
                # Rows another transaction holds are skipped, not waited for: waiting
                # would hold the rest of the lot locked behind them and stall the
                # reconciler's recovery of those (a skipped job stays unmarked, and
                # the reconciler's extra publish of it is harmless).
                free = (select(Job.id).where(Job.id.in_(ids), Job.status == JobStatus.QUEUED,
                                             Job.published_at.is_(None))
                        .with_for_update(skip_locked=True))
                await s.execute(update(Job).where(Job.id.in_(free.scalar_subquery()))
                                .values(published_at=min(sent.values()))
                                .execution_options(synchronize_session=False))
                await s.commit()
        except SQLAlchemyError as exc:
            self._sent = {**sent, **self._sent}
            log.warning("could not mark %d jobs published: %s", len(ids), exc)
        return len(ids)

    async def _flush_unsent(self) -> None:
        unsent, self._unsent = self._unsent, set()
        if not unsent:
            return
        try:
            async with self.sessions() as s:
                await s.execute(update(Job).where(Job.id.in_(unsent),
                                                  Job.status == JobStatus.QUEUED)
                                .values(published_at=None)
                                .execution_options(synchronize_session=False))
                await s.commit()
        except SQLAlchemyError as exc:
            self._unsent |= unsent
            log.warning("could not unmark %d jobs whose send failed: %s", len(unsent), exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
        await self.flush()
