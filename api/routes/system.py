"""Models, queues, health and metrics."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from redis.exceptions import RedisError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from api import metrics
from api.deps import PrincipalDep, RedisDep, SessionMakerDep, SettingsDep
from api.responses import RETRY_AFTER, Alive, ModelList, QueueList, Readiness, errors
from common.catalog import list_models
from common.constants import QUEUES, WORKERS_PATTERN
from common.db import Job, utcnow
from common.jobs import JobStatus

router = APIRouter()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


# Behind a key: no key, the key's rate limit, the database down.
_KEYED = errors(401, 429, 503)


# A model's `hint` is there only when it has one (response_model_exclude_unset).
@router.get("/v1/models", tags=["models"], response_model=ModelList,
            response_model_exclude_unset=True, responses=_KEYED)
async def models(settings: SettingsDep, redis: RedisDep, _p: PrincipalDep) -> dict:
    live = await workers(redis)
    data = []
    for m in list_models(settings):
        entry = m.as_dict()
        entry["loaded_on"] = [w["worker_id"] for w in live if m.id in w["models"]]
        data.append(entry)
    return {"object": "list", "data": data}


async def queue_stats(*, sessions: async_sessionmaker, redis: aioredis.Redis) -> list[dict]:
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
        prios = {p: {"depth": 0, "oldest_age_s": None} for p in ("interactive", "batch")}
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


def _aware(dt):
    from datetime import UTC

    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@router.get("/v1/queues", tags=["queues"], response_model=QueueList, responses=_KEYED)
async def queues(sessions: SessionMakerDep, redis: RedisDep, _p: PrincipalDep) -> dict:
    return {"object": "list", "data": await queue_stats(sessions=sessions, redis=redis)}


@router.get("/healthz", tags=["health"], response_model=Alive)
async def healthz() -> dict:
    return {"status": "alive"}


@router.get("/readyz", tags=["health"], responses={
    200: {"model": Readiness},
    503: {"model": Readiness, "description": "The database or Redis is unreachable.",
          "headers": RETRY_AFTER},
})
async def readyz(sessions: SessionMakerDep, redis: RedisDep) -> JSONResponse:
    checks = {}
    try:
        async with sessions() as s:
            await s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await redis.ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ok else "not_ready", **checks, "time": time.time()}
    return JSONResponse(body, status_code=200 if ok else 503,
                        headers=None if ok else {"Retry-After": "2"})


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def prometheus(sessions: SessionMakerDep, redis: RedisDep) -> Response:
    try:
        metrics.observe_queues(await queue_stats(sessions=sessions, redis=redis))
    except Exception:  # noqa: BLE001 - a scrape still returns the counters
        pass
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
