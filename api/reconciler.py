"""The reconciler: makes the database and the broker agree, every second or so.

- publishes queued jobs whose task never reached the broker (Redis was down at submit);
- publishes every queued job again when Redis lost its data (a restart without
  persistence), noticed by a marker key that disappears with it;
- requeues running jobs whose lease lapsed (their worker died): in seconds, not after
  Redis's visibility timeout; after MONKEY_MAX_ATTEMPTS the job fails instead;
- publishes again the queued jobs whose task message a worker had received when it
  died (its prefetched messages stay unacked on Redis until the visibility timeout);
- expires queued jobs whose start_by deadline passed;
- moves messages left on the legacy priority lists (`llm:9`, before kombu's default
  layout) to today's.

It runs inside every API process; a Redis lock makes exactly one of them active.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import datetime

from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from api.services.batch_work import advance_batches
from api.state import AppState
from common.compat.kombu_redis import adopt_legacy_layout, forget_unacked, stale_unacked
from common.constants import BROKER_EPOCH, HELD_PATTERN, RECONCILER_LOCK, WORKER_KEY
from common.db import Job, utcnow
from common.errors import BrokerUnavailable
from common.jobs import TERMINAL, JobStatus
from common.store import due_for_recovery

log = logging.getLogger("monkey.reconciler")
S = JobStatus

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_UNPUBLISHED_GRACE_S = 2.0
_PUBLISH_PER_TICK = 5000
_LATE_MARKS_S = 30.0

class Reconciler:
    def __init__(self, state: AppState):
        self.state = state
        self.token = secrets.token_hex(8)
        self.leader = False
        self._task: asyncio.Task | None = None
        # After the database was unreachable, live workers renew their leases first.
        self._requeue_after = 0.0
        self._lost_at: datetime | None = None  # when this leader last found Redis emptied
        self._late_marks_until = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.leader:
            try:
                await self.state.redis.eval(
                    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) "
                    "end return 0", 1, RECONCILER_LOCK, self.token)
            except (RedisError, OSError):
                pass

    async def _loop(self) -> None:
        interval = self.state.settings.reconcile_s
        while True:
            try:
                if await self._lead(interval):
                    await self.tick()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, SQLAlchemyError) as exc:
                log.warning("reconciler pass failed: %s", exc)
                self._requeue_after = time.monotonic() + 2 * self.state.settings.heartbeat_s
            except Exception:
                log.exception("reconciler pass failed")
            await asyncio.sleep(interval)

    async def _lead(self, interval: float) -> bool:
        ttl_ms = int(max(interval * 5, 5) * 1000)
        r = self.state.redis
        if self.leader and await r.eval(_RENEW, 1, RECONCILER_LOCK, self.token, ttl_ms):
            return True
        self.leader = bool(await r.set(RECONCILER_LOCK, self.token, nx=True, px=ttl_ms))
        return self.leader

    async def tick(self) -> dict:
        counts = {
            "epoch": await self._check_epoch(),
            "legacy": await self._adopt_legacy_layout(),
            "expired": await self._expire(),
            "requeued": await self._requeue_lapsed(),
            "rescued": await self._rescue_unacked(),
        }
        counts["batches"] = await advance_batches(self.state)
        counts["published"] = await self._publish_pending()
        if any(counts.values()):
            log.info("reconciled %s", counts)
        return counts

    async def _check_epoch(self) -> int:
        """Redis lost its data if the marker is gone: every queued job goes out again.

        For a while after that, jobs marked published with a send time before the loss
        are unmarked too: an API process may have sent a task just before the loss and
        written its mark (batched, up to a flush later) just after our first pass.
        """
        if await self.state.redis.get(BROKER_EPOCH):
            if self._lost_at is not None and time.monotonic() < self._late_marks_until:
                return await self._unmark_queued(sent_before=self._lost_at)
            return 0
        lost_at = utcnow()
        n = await self._unmark_queued()
        await self.state.redis.set(BROKER_EPOCH, self.token)
        self._lost_at, self._late_marks_until = lost_at, time.monotonic() + _LATE_MARKS_S
        return n

    async def _adopt_legacy_layout(self) -> int:
        """Messages that API processes of the Redis layout before kombu's defaults
        pushed onto legacy priority lists (`llm:9`) move to today's, where workers
        find them: each pass, since an old API process may still publish during a
        rolling deploy. A few key lookups when there is nothing to move."""
        moved, dropped = await adopt_legacy_layout(self.state.redis)
        if dropped:
            log.info("dropped %d binding entries of the legacy Redis layout", dropped)
        return moved

    async def _unmark_queued(self, sent_before=None) -> int:
        stmt = update(Job).where(Job.status == S.QUEUED, Job.published_at.is_not(None))
        if sent_before is not None:
            stmt = stmt.where(Job.published_at < sent_before)
        async with self.state.sessions() as s:
            res = await s.execute(stmt.values(published_at=None))
            await s.commit()
        return res.rowcount or 0

    async def _rescue_unacked(self) -> int:
        """Queued jobs whose task message sits unacked with no live worker holding it.

        A worker that dies takes its prefetched messages with it: kombu keeps them in
        its `unacked` hash and puts them back only after the visibility timeout. A
        message older than a lease whose job is still queued and held by no live
        worker is ours to publish again; the stale entry is dropped so kombu does not
        deliver it later (a late delivery would be harmless: the claim refuses it).
        """
        r = self.state.redis
        by_job = await stale_unacked(
            r, delivered_before=time.time() - self.state.settings.lease_s, limit=2000)
        if not by_job:
            return 0
        held = await self._live_held()
        async with self.state.sessions() as s:
            statuses = dict((await s.execute(
                select(Job.id, Job.status).where(Job.id.in_(list(by_job)))
            )).all())
            rescue = [j for j, st in statuses.items() if st == S.QUEUED and j not in held]
            if rescue:
                await s.execute(update(Job).where(Job.id.in_(rescue), Job.status == S.QUEUED)
                                .values(published_at=None))
                await s.commit()
        drop = [t for j, st in statuses.items()
                if (st == S.QUEUED and j not in held) or st in TERMINAL for t in by_job[j]]
        await forget_unacked(r, drop)
        return len(rescue)

    async def _live_held(self) -> set[str]:
        """Jobs whose message a live worker holds (reserved or running)."""
        r = self.state.redis
        held: set[str] = set()
        async for key in r.scan_iter(match=HELD_PATTERN, count=100):
            worker_id = (key.decode() if isinstance(key, bytes) else key).split(":", 2)[2]
            if await r.exists(WORKER_KEY.format(worker_id=worker_id)):
                held |= {m.decode() if isinstance(m, bytes) else m
                         for m in await r.smembers(key)}
            else:
                await r.delete(key)
        return held

    async def _publish_pending(self) -> int:
        """Queued jobs not on the broker go out, many per round trip (after a Redis
        outage that can be a whole batch's lines)."""
        cutoff = utcnow().timestamp() - _UNPUBLISHED_GRACE_S
        async with self.state.sessions() as s:
            rows = (await s.execute(
                select(Job.id, Job.kind, Job.model, Job.queue, Job.priority, Job.attempts,
                       Job.created_at)
                .where(Job.status == S.QUEUED, Job.published_at.is_(None))
                .order_by(Job.priority.desc(), Job.id).limit(_PUBLISH_PER_TICK)
            )).mappings().all()
        # A young job may still be on its way out from the submit that wrote it.
        due = [dict(r) for r in rows
               if r["attempts"] or r["created_at"].timestamp() <= cutoff]
        if not due:
            return 0
        try:
            await self.state.producer.publish_many(due)
        except BrokerUnavailable as exc:
            log.warning("broker unavailable, %d jobs wait for it: %s", len(due), exc)
            return 0
        now = utcnow()
        async with self.state.sessions() as s:
            for i in range(0, len(due), 500):
                ids = [r["id"] for r in due[i:i + 500]]
                await s.execute(update(Job).where(Job.id.in_(ids), Job.published_at.is_(None))
                                .values(published_at=now))
            await s.commit()
        return len(due)

    async def _requeue_lapsed(self) -> int:
        if time.monotonic() < self._requeue_after:
            return 0
        async with self.state.auto_sessions() as s:
            rows = (await s.execute(due_for_recovery())).all()
        return sum([await self.state.store.recover(job) for job in rows])

    async def _expire(self) -> int:
        return await self.state.store.expire_due()
