"""The last hour of the queue gauges, for the operators' charts (GET /v1/ops/history).

The control process samples every MONKEY_OPS_SAMPLE_S seconds (10 by default, 0 turns
it off): per queue, what GET /v1/queues shows (queued jobs and the oldest one's age per
priority, running jobs, live workers) plus the jobs that finished since the previous
sample. Each sample is a member of one Redis sorted set scored by its time; samples
older than an hour are dropped at each write, and the key expires when nothing samples.
Where several control processes run, a short Redis lock lets one of them sample per
interval.

The finished count reads the jobs index on (owner_id, finished_at), the interval's
range for each key (both databases plan it so): it does not scan the jobs table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from api.services.queues import queue_stats
from common.constants import REDIS_PREFIX
from common.db import ApiKey, Job

log = logging.getLogger("monkey.control")

HISTORY_KEY = REDIS_PREFIX + "ops:history"
SAMPLER_LOCK = REDIS_PREFIX + "ops:sampler"
HISTORY_S = 3600.0


async def finished_since(sessions: async_sessionmaker, since: datetime, until: datetime
                         ) -> dict[str, int]:
    """Jobs that finished in (since, until], per queue."""
    async with sessions() as s:
        rows = (await s.execute(
            select(Job.queue, func.count())
            .where(Job.owner_id.in_(select(ApiKey.id)), Job.finished_at > since,
                   Job.finished_at <= until)
            .group_by(Job.queue))).all()
    return {queue: n for queue, n in rows}


async def take_sample(*, sessions: async_sessionmaker, redis: aioredis.Redis,
                      since: float, now: float) -> dict:
    """One sample: GET /v1/queues's figures per queue, and `finished` since `since`."""
    done = await finished_since(sessions, datetime.fromtimestamp(since, UTC),
                                datetime.fromtimestamp(now, UTC))
    queues = await queue_stats(sessions=sessions, redis=redis)
    for q in queues:
        q["finished"] = done.get(q["queue"], 0)
    return {"at": round(now, 3), "interval_s": round(now - since, 3), "queues": queues}


async def store_sample(redis: aioredis.Redis, sample: dict) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(HISTORY_KEY, {json.dumps(sample, separators=(",", ":")): sample["at"]})
    pipe.zremrangebyscore(HISTORY_KEY, "-inf", f"({sample['at'] - HISTORY_S}")
    pipe.expire(HISTORY_KEY, int(2 * HISTORY_S))
    await pipe.execute()


async def read_history(redis: aioredis.Redis, *, since: float | None = None) -> list[dict]:
    """The samples of the last hour (after `since`, a Unix time, when given), oldest first."""
    low = time.time() - HISTORY_S
    if since is not None:
        low = max(low, since)
    members = await redis.zrangebyscore(HISTORY_KEY, f"({low}", "+inf")
    return [json.loads(cast(bytes, m)) for m in members]


class HistorySampler:
    """Samples the queues every `every_s` seconds until stopped (control process)."""

    def __init__(self, *, sessions: async_sessionmaker, redis: aioredis.Redis, every_s: float):
        self.sessions = sessions
        self.redis = redis
        self.every_s = every_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.every_s > 0:
            self._task = asyncio.create_task(self._run(), name="ops-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _since(self, now: float) -> float:
        """The time of the newest sample (whoever took it), so that no finished job is
        counted twice or missed; one interval back when there is none lately."""
        newest = await self.redis.zrange(HISTORY_KEY, -1, -1, withscores=True)
        at = float(cast(tuple, newest[0])[1]) if newest else 0.0
        if now - 3 * self.every_s < at < now:
            return at
        return now - self.every_s

    async def _run(self) -> None:
        while True:
            now = time.time()
            try:
                # One sampler per interval, whichever control process comes first.
                lock_ms = max(1, int(self.every_s * 900))
                if await self.redis.set(SAMPLER_LOCK, "1", nx=True, px=lock_ms):
                    sample = await take_sample(sessions=self.sessions, redis=self.redis,
                                               since=await self._since(now), now=now)
                    await store_sample(self.redis, sample)
            except (RedisError, OSError, SQLAlchemyError) as exc:
                log.warning("queue history not sampled: %s", exc)
            await asyncio.sleep(max(0.0, self.every_s - (time.time() - now)))


__all__ = ["HISTORY_S", "HistorySampler", "read_history", "store_sample", "take_sample"]
