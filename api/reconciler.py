"""The reconciler: makes the database and the broker agree, every second or so.

- publishes queued jobs whose task never reached the broker (Redis was down at submit);
- publishes again the queued jobs whose task message is nowhere (api/recovery.py: not
  on the broker's lists, not unacked, not held by a live worker), including when Redis
  lost its data (a restart without persistence), noticed by a marker key that
  disappears with it;
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

from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from api.recovery import LostMessages, live_held
from api.services.batch_work import advance_batches
from api.state import AppState
from common.compat.kombu_redis import adopt_legacy_layout, forget_unacked, stale_unacked
from common.constants import BROKER_EPOCH, RECONCILER_LOCK
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


_STOP_WAIT_S = 5.0


class Reconciler:
    def __init__(self, state: AppState):
        self.state = state
        self.token = secrets.token_hex(8)
        self.leader = False
        self._task: asyncio.Task | None = None
        # After the database was unreachable, live workers renew their leases first.
        self._requeue_after = 0.0
        self._stopped = False
        self.lost = LostMessages(state)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        self._stopped = True  # no further pass, even if a pass swallowed the cancel
        if self._task:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=_STOP_WAIT_S)
            if not done:
                log.warning("a reconciler pass did not stop within %.0f s", _STOP_WAIT_S)
        if self.leader:
            try:
                await self.state.redis.eval(
                    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) "
                    "end return 0", 1, RECONCILER_LOCK, self.token)
            except (RedisError, OSError):
                pass

    async def _loop(self) -> None:
        interval = self.state.settings.reconcile_s
        while not self._stopped:
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
        if counts["requeued"] or counts["rescued"]:
            self.lost.worker_died()
        counts["batches"] = await advance_batches(self.state)
        counts["lost"] = await self.lost.tick()
        counts["published"] = await self._publish_pending()
        if any(counts.values()):
            log.info("reconciled %s", counts)
        return counts

    async def _check_epoch(self) -> int:
        """Redis lost its data if the marker is gone (or this is a fresh Redis): the
        queued jobs published before now whose message it does not have go out again,
        after a sweep that starts at once (api/recovery.py). 1 when the marker was gone.
        """
        if await self.state.redis.get(BROKER_EPOCH):
            return 0
        self.lost.broker_lost(utcnow())
        await self.state.redis.set(BROKER_EPOCH, self.token)
        return 1

    async def _adopt_legacy_layout(self) -> int:
        """Messages that API processes of the Redis layout before kombu's defaults
        pushed onto legacy priority lists (`llm:9`) move to today's, where workers
        find them: each pass, since an old API process may still publish during a
        rolling deploy. A few key lookups when there is nothing to move."""
        moved, dropped = await adopt_legacy_layout(self.state.redis)
        if dropped:
            log.info("dropped %d binding entries of the legacy Redis layout", dropped)
        return moved

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
        held = await live_held(r)
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

    async def _publish_pending(self) -> int:
        """Queued jobs not on the broker go out, many per round trip (after a Redis
        outage that can be a whole batch's lines)."""
        cutoff = utcnow().timestamp() - _UNPUBLISHED_GRACE_S
        async with self.state.sessions() as s:
            rows = (await s.execute(
                select(Job.id, Job.kind, Job.model, Job.queue, Job.priority, Job.attempts,
                       Job.created_at)
                .where(Job.status == S.QUEUED, Job.published_at.is_(None),
                       Job.held_at.is_(None))  # held ones are fair_release's to publish
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
