"""Recovery that needs no task message to be anywhere: Postgres says which jobs are
queued, and a queued job whose message cannot be accounted for is published again.

kombu's Redis transport loses a message outright: a worker killed between its BRPOP
and its write to the `unacked` hash (a millisecond, hit now and then by
tests/chaos/test_worker_kills.py), `celery purge`, eviction under maxmemory. Its job
stayed `queued` for ever. A message is accounted for when it is on one of its
queue's priority lists, in kombu's `unacked` hash, or held by a live worker
(`monkey:held:*`). A queued job published more than MONKEY_LOST_AFTER_S ago whose
message is none of these is unmarked, and the reconciler's publish sends it again in
the same pass. A duplicate is harmless: the claim takes a job once, and the attempt
fence refuses a superseded run's writes.

Reading every message of a 50,000-line batch each second would be 50 MB of LRANGE a
second, so the check has two parts:

- the census, each tick: one Redis round trip (LLEN of every list, HLEN of unacked)
  and one COUNT of the jobs that should have a message (queued, or running: a
  running job's message stays unacked until its task returns). A count
  short on CONFIRM_TICKS ticks in a row starts a sweep; one short count alone is
  a message between a worker's BRPOP and its unacked write, or a mark made between
  the two reads.
- the sweep: every list read in slices, SWEEP_SLICE messages a tick, job ids only,
  from the lists' pushing end (a waiting message's index only grows, so the sweep
  misses none that stays); then the unacked hash and the held sets; then the queued
  jobs published before the sweep began and older than the threshold. Jobs missing
  but younger than the threshold are looked for again once they are past it.

The counts can hide a loss behind a surplus: after a worker died, its stale unacked
entries stay until their jobs end, and a job cancelled while queued leaves its message
on the list. So a sweep also starts when the reconciler finds a worker dead (a lapsed
lease: the moment kombu's BRPOP-to-unacked window loses a message), and every
MONKEY_LOST_SCAN_S whatever the census says.

When Redis lost its data (the reconciler's epoch marker is gone), a sweep starts at
once for the jobs published before the loss, and one more with the same bound
LATE_MARKS_S later, for publish marks written after the first one's read for
messages sent before the loss (the API marks in batches, every half second). Unlike
publishing every queued job again, this leaves alone the messages a fresh Redis
already has (a first deploy, where the API published before the control process's
first pass). A mark later still (the database away too) is the census's to catch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from api.services.batch_lines import chunked_lines
from api.services.fair import HELD
from api.state import AppState
from common.compat.kombu_redis import (
    job_ids_on_list,
    message_counts,
    queue_lists,
    unacked_job_ids,
)
from common.constants import HELD_PATTERN, WORKER_KEY
from common.db import Job, utcnow
from common.jobs import JobStatus

log = logging.getLogger("monkey.reconciler")
S = JobStatus

SWEEP_SLICE = 2000  # messages read per tick: about 2 MB, a few milliseconds
CONFIRM_TICKS = 2
LATE_MARKS_S = 5.0
_UNMARK_CHUNK = 500


@dataclass
class Sweep:
    started: datetime
    lists: list[str]
    reason: str  # census | scan | loss | death | recheck | asked
    lost_at: datetime | None = None  # after a loss: only jobs published before it
    cursor: int = 0
    seen: set[str] = field(default_factory=set)
    read: int = 0
    ticks: int = 0
    began: float = field(default_factory=time.monotonic)


class LostMessages:
    """One per reconciler: `tick()` each pass, `broker_lost()` when Redis lost its data.
    `last` holds the figures of the latest finished sweep; `slice` is how many
    messages a tick reads."""

    def __init__(self, state: AppState):
        self.state = state
        self.lost_after_s = state.settings.lost_after_s
        self.scan_s = state.settings.lost_scan_s
        self.lists = queue_lists()
        self.slice = SWEEP_SLICE
        self.sweep: Sweep | None = None
        self.last: dict[str, Any] = {}
        self._last_start = time.monotonic()
        self._short = 0  # census ticks in a row that came up short
        self._quiet_until = 0.0  # no census-started sweep before (monotonic)
        self._recheck_at: float | None = None  # jobs missing but young are due then
        self._died = False
        self._lost_at: datetime | None = None
        self._late_sweep_at: float | None = None

    def broker_lost(self, lost_at: datetime) -> None:
        """Redis lost its data before `lost_at`: sweep at once, and again for a while."""
        self._lost_at, self._late_sweep_at = lost_at, time.monotonic() + LATE_MARKS_S
        self.sweep = self._new_sweep("loss", lost_at)

    def worker_died(self) -> None:
        """A worker died (its lease lapsed): it may have taken a message with it."""
        self._died = True

    def start_sweep(self) -> None:
        """Sweep from the next tick on, whatever the census says (unless one runs)."""
        if self.sweep is None:
            self.sweep = self._new_sweep("asked")

    async def tick(self) -> int:
        """Advance the sweep by a slice (starting one when due); at its end, unmark the
        jobs whose message is nowhere. Returns how many were unmarked."""
        if self.sweep is None:
            self.sweep = await self._due()
            if self.sweep is None:
                return 0
        if not await self._step(self.sweep):
            return 0
        sweep, self.sweep = self.sweep, None
        return await self._finish(sweep)

    def _new_sweep(self, reason: str, lost_at: datetime | None = None) -> Sweep:
        self._last_start = time.monotonic()
        self._short = 0
        return Sweep(started=utcnow(), lists=list(self.lists), reason=reason, lost_at=lost_at)

    async def _due(self) -> Sweep | None:
        now = time.monotonic()
        if self._late_sweep_at is not None and now >= self._late_sweep_at:
            self._late_sweep_at = None
            return self._new_sweep("loss", self._lost_at)
        if self._died:
            self._died = False
            return self._new_sweep("death")
        if self._recheck_at is not None and now >= self._recheck_at:
            self._recheck_at = None
            return self._new_sweep("recheck")
        if now - self._last_start >= self.scan_s:
            return self._new_sweep("scan")
        if now < self._quiet_until:
            return None
        self._short = self._short + 1 if await self.census() > 0 else 0
        return self._new_sweep("census") if self._short >= CONFIRM_TICKS else None

    async def census(self) -> int:
        """How many messages short the broker is of the jobs that should have one.

        Batch lines that run in chunks share a message (up to MONKEY_BATCH_CHUNK_LINES
        each): they count as the fewest messages that can carry them, so a healthy
        backlog of chunks never looks short (a sweep would then run every tick)."""
        on_lists, unacked = await message_counts(self.state.redis, self.lists)
        # Read after Redis: a job that finished in between counts on neither side.
        # Queued jobs not yet published count too: their message is on its way (and
        # a count on the status index alone is 1.6 ms for 50,000 rows, not 16). Jobs
        # held back (api/services/fair.py) have no message, by design.
        active = Job.status.in_([S.QUEUED, S.RUNNING, S.CANCELLING]) & ~HELD
        in_chunks = chunked_lines()
        async with self.state.auto_sessions() as s:
            alone, chunked = (await s.execute(select(
                func.count().filter(~in_chunks), func.count().filter(in_chunks),
            ).select_from(Job).where(active))).one()
        per_message = self.state.settings.batch_chunk_lines
        expected = int(alone) - (-int(chunked) // per_message)  # + ceil(chunked / size)
        return expected - on_lists - unacked

    async def _step(self, sweep: Sweep) -> bool:
        """Read the next slice; True once every list was read to its end."""
        budget = self.slice
        sweep.ticks += 1
        while sweep.lists and budget > 0:
            jobs, n = await job_ids_on_list(self.state.redis, sweep.lists[0], sweep.cursor,
                                            budget)
            sweep.seen.update(jobs)
            sweep.read += n
            if n < budget:
                sweep.lists.pop(0)
                sweep.cursor = 0
            else:
                sweep.cursor += n
            budget -= n
        return not sweep.lists

    async def _finish(self, sweep: Sweep) -> int:
        r = self.state.redis
        accounted = sweep.seen | await unacked_job_ids(r) | await live_held(r)
        now = utcnow()
        cutoff = sweep.lost_at or min(sweep.started, now - timedelta(seconds=self.lost_after_s))
        # Plain columns of the table, ids apart from times: 50,000 rows through the ORM
        # took 0.5 s of this tick, as plain strings a tenth of that.
        jobs = Job.__table__.c
        queued = (jobs.status == S.QUEUED) & jobs.held_at.is_(None)
        async with self.state.auto_sessions() as s:
            old = (await s.execute(select(jobs.id).where(
                queued, jobs.published_at < cutoff))).scalars().all()
            recent = (await s.execute(select(jobs.id, jobs.published_at).where(
                queued, jobs.published_at >= cutoff, jobs.published_at < sweep.started))).all()
        lost = {job for job in old if job not in accounted}
        young = [at for job, at in recent if job not in accounted]
        if lost:  # a message a worker popped while we read sits in unacked by now
            lost -= await unacked_job_ids(r)
        unmarked = await self._unmark(sorted(lost), cutoff) if lost else 0
        if young:  # look again once the oldest of them is past the threshold
            wait = (min(young) + timedelta(seconds=self.lost_after_s) - now).total_seconds()
            self._recheck_at = self._quiet_until = time.monotonic() + max(wait, 0.0)
        elif not unmarked:  # the census was short for no lost job: let it settle
            self._quiet_until = time.monotonic() + self.lost_after_s
        self.last = {"reason": sweep.reason, "read": sweep.read, "ticks": sweep.ticks,
                     "queued": len(old) + len(recent), "missing": len(lost) + len(young),
                     "unmarked": unmarked,
                     "ms": round((time.monotonic() - sweep.began) * 1000, 1)}
        if unmarked:
            log.warning("publishing again %d queued jobs whose task message was lost",
                        unmarked, extra={"sweep": self.last, "jobs": sorted(lost)[:10]})
        else:
            log.info("lost-message sweep: every queued job's message accounted for",
                     extra={"sweep": self.last})
        return unmarked

    async def _unmark(self, ids: list[str], cutoff: datetime) -> int:
        n = 0
        async with self.state.sessions() as s:
            for i in range(0, len(ids), _UNMARK_CHUNK):
                res = await s.execute(
                    update(Job).where(Job.id.in_(ids[i:i + _UNMARK_CHUNK]),
                                      Job.status == S.QUEUED, Job.published_at < cutoff)
                    .values(published_at=None).execution_options(synchronize_session=False))
                n += res.rowcount or 0
            await s.commit()
        return n


async def live_held(redis: Any) -> set[str]:
    """Jobs whose message a live worker holds (reserved or running); the held sets of
    workers that are gone are dropped."""
    held: set[str] = set()
    async for key in redis.scan_iter(match=HELD_PATTERN, count=100):
        worker_id = (key.decode() if isinstance(key, bytes) else key).split(":", 2)[2]
        if await redis.exists(WORKER_KEY.format(worker_id=worker_id)):
            held |= {m.decode() if isinstance(m, bytes) else m
                     for m in await redis.smembers(key)}
        else:
            await redis.delete(key)
    return held


__all__ = ["CONFIRM_TICKS", "LATE_MARKS_S", "SWEEP_SLICE", "LostMessages", "Sweep",
           "live_held"]
