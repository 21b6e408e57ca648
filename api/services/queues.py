"""What waits and runs, per queue and priority: for GET /v1/queues, the Prometheus
gauges that autoscalers read (api/metrics.py), and the ML service's wake-up (api/wake.py).

Three places hold a job that is not finished, and an autoscaler needs all three:

- the broker's lists (kombu: one Redis list per priority step): what KEDA's `redis`
  scaler sees with LLEN;
- the workers' prefetch: a message a worker has received (kombu moved it to its
  `unacked` hash) but not started. It is gone from the list, so a scaler that reads
  only LLEN sees an empty queue while jobs wait behind a busy worker (and may scale
  that worker away). Each live worker records these in its held set
  (`monkey:held:{worker}`, workers/supervisor.py); a held job still `queued` in the
  database is prefetched, not running;
- running jobs: the database (`running`, `cancelling`).

The database's `queued` count covers all of these waiting jobs, plus any that never
reached the broker (Redis was down); the oldest queued job's age is the wait to scale on.
"""

from __future__ import annotations

import bisect
import json
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from common.constants import (
    HELD_PATTERN,
    PRIORITY_SEP,
    PRIORITY_STEPS,
    PRIORITY_VALUE,
    QUEUES,
    WORKER_KEY,
    WORKERS_PATTERN,
)
from common.db import Job, utcnow
from common.jobs import JobStatus

PRIORITIES = tuple(PRIORITY_VALUE)  # ("interactive", "batch")
_BY_VALUE = sorted((v, name) for name, v in PRIORITY_VALUE.items())
_HELD_IDS_MAX = 20_000  # a bound on one IN (...) lookup


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def step_priority(step: int) -> str:
    """Our priority name for a kombu priority step (a stock client may use 3 or 6)."""
    values = [v for v, _ in _BY_VALUE]
    return _BY_VALUE[max(bisect.bisect(values, step) - 1, 0)][1]


def list_name(queue: str, step: int) -> str:
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


async def workers(redis: aioredis.Redis) -> list[dict]:
    """Workers that published themselves in Redis within their heartbeat window."""
    found = []
    try:
        async for key in redis.scan_iter(match=WORKERS_PATTERN, count=200):
            info = await redis.hgetall(key)
            if info:
                d = {_text(k): _text(v) for k, v in info.items()}
                d["queues"] = json.loads(d.get("queues", "[]"))
                d["models"] = json.loads(d.get("models", "[]"))
                found.append(d)
    except (RedisError, OSError):
        pass
    return found


async def queue_stats(*, sessions: async_sessionmaker, redis: aioredis.Redis) -> list[dict]:
    """Per queue: queued jobs (count, oldest age) per priority, running jobs, live workers."""
    now = utcnow()
    async with sessions() as s:
        queued = (await s.execute(
            select(Job.queue, Job.priority, func.count(), func.min(Job.created_at))
            .where(Job.status == JobStatus.QUEUED).group_by(Job.queue, Job.priority)
        )).all()
        running = dict((await s.execute(
            select(Job.queue, func.count())
            .where(Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]))
            .group_by(Job.queue)
        )).all())
    live = await workers(redis)
    out = []
    for q in QUEUES:
        prios: dict[str, dict] = {p: {"depth": 0, "oldest_age_s": None} for p in PRIORITIES}
        for queue, prio, count, oldest in queued:
            if queue == q:
                age = (now - _aware(oldest)).total_seconds() if oldest else None
                prios[prio] = {"depth": count,
                               "oldest_age_s": round(age, 3) if age is not None else None}
        out.append({
            "queue": q, "running": running.get(q, 0), "priorities": prios,
            "workers": sum(1 for w in live if q in w["queues"]),
        })
    return out


async def live_held(redis: aioredis.Redis) -> set[str]:
    """Jobs whose message a live worker holds (received, not finished). Read-only: the
    reconciler, not a scrape, cleans up the held sets of dead workers."""
    held: set[str] = set()
    async for key in redis.scan_iter(match=HELD_PATTERN, count=200):
        worker_id = _text(key).split(":", 2)[2]
        if await redis.exists(WORKER_KEY.format(worker_id=worker_id)):
            held |= {_text(m) for m in await redis.smembers(key)}
    return held


async def broker_stats(*, sessions: async_sessionmaker,
                       redis: aioredis.Redis) -> dict[tuple[str, str], dict[str, int]]:
    """(queue, priority) -> {messages, prefetched, running}: task messages in the broker's
    lists, messages live workers hold that have not started, and jobs running."""
    out = {(q, p): {"messages": 0, "prefetched": 0, "running": 0}
           for q in QUEUES for p in PRIORITIES}
    pipe = redis.pipeline(transaction=False)
    lists = [(q, step) for q in QUEUES for step in PRIORITY_STEPS]
    for q, step in lists:
        pipe.llen(list_name(q, step))
    for (q, step), n in zip(lists, await pipe.execute(), strict=True):
        out[(q, step_priority(step))]["messages"] += n
    held = sorted(await live_held(redis))[:_HELD_IDS_MAX]
    async with sessions() as s:
        running = (await s.execute(
            select(Job.queue, Job.priority, func.count())
            .where(Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]))
            .group_by(Job.queue, Job.priority))).all()
        prefetched = (await s.execute(
            select(Job.queue, Job.priority, func.count())
            .where(Job.id.in_(held), Job.status == JobStatus.QUEUED)
            .group_by(Job.queue, Job.priority))).all() if held else []
    for field, rows in (("running", running), ("prefetched", prefetched)):
        for q, p, n in rows:
            if (q, p) in out:
                out[(q, p)][field] = n
    return out


__all__ = ["PRIORITIES", "broker_stats", "list_name", "live_held", "queue_stats",
           "step_priority", "workers"]
