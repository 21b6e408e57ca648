"""Retention: the sweep that deletes what has outlived its time, run by the control
process (api/control.py) every MONKEY_SWEEP_S on the reconciler's leader.

What goes, and when:
- an ended job (with its response row, its webhook deliveries and its Redis event
  stream) `expires_after` seconds after it ended when it set one (a response's is its
  job's), else MONKEY_RETENTION_DAYS after; never while its webhook has an event not
  yet handed over or a delivery still being retried;
- an ended batch MONKEY_RETENTION_DAYS after it ended, with its lines: the lines are
  jobs of the batch and go with it, never on their own clock;
- a file at its `expires_at` (its upload's expires_after) or MONKEY_RETENTION_DAYS
  after its upload, unless it is the input of a batch still at work.

MONKEY_RETENTION_DAYS=0 keeps all but what set its own expires_after. Everything is
deleted in slices of MONKEY_SWEEP_SLICE rows, each slice its own short transaction: a
50,000-line batch never becomes one long DELETE holding its locks. Each swept id leaves
a tombstone (common/swept.py) so that its GET answers 404 saying it expired, when and
why; tombstones go after MONKEY_RETENTION_TOMBSTONE_DAYS (0: never).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, bindparam, delete, exists, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.batches_db import PART_BYTES, Batch, File, FilePart
from common.db import Job, UTCDateTime, utcnow
from common.errors import NotFound
from common.events import events_key
from common.jobs import BATCH_TERMINAL, BATCH_WORKING, TERMINAL
from common.responses_db import ResponseRow
from common.settings import Settings
from common.swept import Swept
from common.webhooks import WebhookDelivery

log = logging.getLogger("monkey.retention")

_PENDING = "pending"


class Sweeper:
    """The sweep of one control process; `sweep()` is one whole pass (tests call it)."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], redis: aioredis.Redis,
                 settings: Settings, leading: Callable[[], bool] = lambda: True):
        self.sessions = sessions
        self.redis = redis
        self.settings = settings
        self.leading = leading
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            if not self.leading():
                continue
            try:
                counts = await self.sweep()
            except asyncio.CancelledError:
                raise
            except (SQLAlchemyError, OSError) as exc:  # the database away: next pass
                log.warning("retention sweep failed: %s", exc)
                continue
            except Exception:
                log.exception("retention sweep failed")
                continue
            if any(counts.values()):
                log.info("swept %s", counts)

    @property
    def _retention(self) -> timedelta | None:
        days = self.settings.retention_days
        return timedelta(days=days) if days else None

    @property
    def _rule(self) -> str:
        return f"MONKEY_RETENTION_DAYS={self.settings.retention_days:g}"

    async def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Delete everything due at `now` (default: now), slice by slice; the counts of
        what went, by kind (a batch's lines count as jobs)."""
        now = now or utcnow()
        counts = {"jobs": 0, "batches": 0, "files": 0, "tombstones": 0}
        while n := await self._jobs_slice(self._own_expiry_due(now)):
            counts["jobs"] += n
        if self._retention is not None:
            while n := await self._jobs_slice(self._retention_due(now - self._retention)):
                counts["jobs"] += n
            while batch := await self._due_batch(now - self._retention):
                counts["jobs"] += await self._sweep_batch(batch)
                counts["batches"] += 1
        while n := await self._files_slice(now):
            counts["files"] += n
        if self.settings.tombstone_days:
            while n := await self._tombstones_slice(
                    now - timedelta(days=self.settings.tombstone_days)):
                counts["tombstones"] += n
        return counts

    # Jobs and responses ---------------------------------------------------------------

    def _own_expiry_due(self, now: datetime) -> ColumnElement[bool]:
        """Jobs with an expires_after of their own, ended that long before `now`."""
        return Job.expires_after_s.is_not(None) & (Job.finished_at <= now) & _ended_plus(
            now, postgres=not self.settings.is_sqlite)

    def _retention_due(self, cutoff: datetime) -> ColumnElement[bool]:
        return (Job.expires_after_s.is_(None) & Job.batch_id.is_(None)
                & (Job.finished_at < cutoff))

    async def _jobs_slice(self, due: ColumnElement[bool]) -> int:
        """One slice of due jobs (not a batch's lines): tombstones, then the rows."""
        undelivered = exists().where(WebhookDelivery.subject_id == Job.id,
                                     WebhookDelivery.status == _PENDING)
        stmt = (select(Job.id, Job.owner_id, Job.finished_at, Job.expires_after_s,
                       ResponseRow.job_id.label("response"))
                .outerjoin(ResponseRow, ResponseRow.job_id == Job.id)
                .where(due, Job.status.in_(list(TERMINAL)), Job.webhook_next.is_(None),
                       ~undelivered)
                .limit(self.settings.sweep_slice))
        async with self.sessions() as s:
            rows = (await s.execute(stmt)).all()
            if not rows:
                return 0
            await self._bury(s, [self._job_tombstone(r) for r in rows])
            await _delete_jobs(s, [r.id for r in rows])
            await s.commit()
        await self._drop_streams([r.id for r in rows])
        return len(rows)

    def _job_tombstone(self, row: Any) -> dict[str, Any]:
        if row.expires_after_s is not None:
            expired_at = row.finished_at + timedelta(seconds=row.expires_after_s)
            rule = f"expires_after={row.expires_after_s}"
        else:
            expired_at, rule = row.finished_at + self._retention, self._rule
        return {"id": row.id, "kind": "response" if row.response else "job",
                "owner_id": row.owner_id, "expired_at": expired_at, "rule": rule}

    async def _drop_streams(self, job_ids: list[str]) -> None:
        # Best effort: a stream left behind goes anyway when its expiry comes.
        try:
            await self.redis.unlink(*[events_key(j) for j in job_ids])
        except (RedisError, OSError) as exc:
            log.warning("event streams of %d swept jobs left to expire: %s", len(job_ids), exc)

    # Batches --------------------------------------------------------------------------

    async def _due_batch(self, cutoff: datetime) -> Any:
        ended = func.coalesce(Batch.completed_at, Batch.failed_at, Batch.expired_at,
                              Batch.cancelled_at)
        undelivered = exists().where(WebhookDelivery.subject_id == Batch.id,
                                     WebhookDelivery.status == _PENDING)
        async with self.sessions() as s:
            return (await s.execute(
                select(Batch.id, Batch.owner_id, ended.label("ended_at"))
                .where(Batch.status.in_(list(BATCH_TERMINAL)), ended < cutoff,
                       Batch.webhook_next.is_(None), ~undelivered)
                .limit(1))).first()

    async def _sweep_batch(self, batch: Any) -> int:
        """The batch's lines slice by slice, then the batch itself. A pass cut short
        leaves the batch with fewer lines; the next one finishes it."""
        tomb = {"owner_id": batch.owner_id, "expired_at": batch.ended_at + self._retention,
                "rule": self._rule}
        lines = 0
        while True:
            async with self.sessions() as s:
                ids = list((await s.execute(select(Job.id).where(Job.batch_id == batch.id)
                                            .limit(self.settings.sweep_slice))).scalars())
                if ids:
                    await self._bury(s, [{"id": j, "kind": "job", **tomb} for j in ids])
                    await _delete_jobs(s, ids)
                else:
                    await self._bury(s, [{"id": batch.id, "kind": "batch", **tomb}])
                    await s.execute(delete(WebhookDelivery)
                                    .where(WebhookDelivery.subject_id == batch.id))
                    await s.execute(delete(Batch).where(Batch.id == batch.id))
                await s.commit()
            if not ids:
                return lines
            lines += len(ids)
            await self._drop_streams(ids)

    # Files ----------------------------------------------------------------------------

    async def _files_slice(self, now: datetime) -> int:
        due = File.expires_at <= now
        if self._retention is not None:
            due = or_(due, File.expires_at.is_(None) & (File.created_at < now - self._retention))
        in_use = exists().where(Batch.input_file_id == File.id,
                                Batch.status.in_(list(BATCH_WORKING)))
        # A file has up to this many parts: a slice deletes about sweep_slice rows.
        parts = max(1, math.ceil(self.settings.max_file_bytes / PART_BYTES))
        async with self.sessions() as s:
            rows = (await s.execute(
                select(File.id, File.owner_id, File.created_at, File.expires_at)
                .where(due, ~in_use).limit(max(1, self.settings.sweep_slice // parts)))).all()
            if not rows:
                return 0
            await self._bury(s, [self._file_tombstone(r) for r in rows])
            ids = [r.id for r in rows]
            # Parts first: SQLite does not enforce the foreign key's cascade.
            await s.execute(delete(FilePart).where(FilePart.file_id.in_(ids)))
            await s.execute(delete(File).where(File.id.in_(ids)))
            await s.commit()
        return len(rows)

    def _file_tombstone(self, row: Any) -> dict[str, Any]:
        if row.expires_at is not None:
            seconds = round((row.expires_at - row.created_at).total_seconds())
            expired_at, rule = row.expires_at, f"expires_after={seconds}"
        else:
            expired_at, rule = row.created_at + self._retention, self._rule
        return {"id": row.id, "kind": "file", "owner_id": row.owner_id,
                "expired_at": expired_at, "rule": rule}

    # Tombstones -----------------------------------------------------------------------

    async def _bury(self, s: AsyncSession, stones: list[dict[str, Any]]) -> None:
        now = utcnow()
        insert = sqlite_insert if self.settings.is_sqlite else pg_insert
        # A second sweeper (a leader change mid-pass) may have buried some already.
        await s.execute(insert(Swept).on_conflict_do_nothing(index_elements=["id"]),
                        [{**stone, "swept_at": now} for stone in stones])

    async def _tombstones_slice(self, cutoff: datetime) -> int:
        async with self.sessions() as s:
            ids = list((await s.execute(select(Swept.id).where(Swept.swept_at < cutoff)
                                        .limit(self.settings.sweep_slice))).scalars())
            if ids:
                await s.execute(delete(Swept).where(Swept.id.in_(ids)))
                await s.commit()
        return len(ids)


async def _delete_jobs(s: AsyncSession, ids: list[str]) -> None:
    await s.execute(delete(ResponseRow).where(ResponseRow.job_id.in_(ids)))
    await s.execute(delete(WebhookDelivery).where(WebhookDelivery.subject_id.in_(ids)))
    await s.execute(delete(Job).where(Job.id.in_(ids)))


def _ended_plus(now: datetime, *, postgres: bool) -> ColumnElement[bool]:
    """finished_at + expires_after_s seconds <= now, in the database's own arithmetic."""
    sql = ("jobs.finished_at + make_interval(secs => jobs.expires_after_s) <= :sweep_now"
           if postgres else
           "julianday(jobs.finished_at) * 86400.0 + jobs.expires_after_s "
           "<= julianday(:sweep_now) * 86400.0")
    return text(sql).bindparams(bindparam("sweep_now", now, type_=UTCDateTime()))  # type: ignore[return-value]


# Answering for what is gone -------------------------------------------------------------

async def not_found(session: AsyncSession, *, noun: str, asked: str, swept_id: str | None,
                    owner_id: str) -> NotFound:
    """The 404 for an id this key does not have: one that says when and why it expired
    if the sweep deleted it (for its owner only), else the plain "no such" one."""
    stone = await session.get(Swept, swept_id) if swept_id else None
    if stone is None or stone.owner_id != owner_id:
        return NotFound(f"no {noun} {asked!r}")
    return NotFound(f"{noun} {asked} expired on {stone.expired_at:%Y-%m-%d %H:%M:%S} UTC "
                    f"and was deleted ({stone.rule})", code="expired")


__all__ = ["Sweeper", "not_found"]
