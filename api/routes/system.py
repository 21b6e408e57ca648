"""Models, queues, health and metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from redis.exceptions import RedisError
from sqlalchemy import text

from api import metrics
from api.deps import PrincipalDep, QueueGaugesDep, RedisDep, SessionMakerDep, SettingsDep
from api.responses import (
    RETRY_AFTER,
    Alive,
    ModelEntry,
    ModelList,
    QueueList,
    Readiness,
    errors,
)
from api.services.queues import queue_stats, workers
from common.catalog import ModelInfo, find_model, list_models

router = APIRouter()


# Behind a key: no key, the key's rate limit, the database down.
_KEYED = errors(401, 429, 503)


# A model's `hint` is there only when it has one (response_model_exclude_unset).
@router.get("/v1/models", tags=["models"], response_model=ModelList,
            response_model_exclude_unset=True, responses=_KEYED)
async def models(settings: SettingsDep, redis: RedisDep, _p: PrincipalDep) -> dict:
    live = await workers(redis)
    return {"object": "list", "data": [_entry(m, live) for m in list_models(settings)]}


# An id names a provider's model as PROVIDER/NAME: the path keeps its slash.
@router.get("/v1/models/{model_id:path}", tags=["models"], response_model=ModelEntry,
            response_model_exclude_unset=True, responses={**_KEYED, **errors(404)})
async def model(model_id: str, settings: SettingsDep, redis: RedisDep,
                _p: PrincipalDep) -> dict:
    """One model: an entry of GET /v1/models, or a provider's model by its own name
    (`openai/gpt-4o`) when that provider is configured; 404 `model_not_found` else."""
    return _entry(find_model(settings, model_id), await workers(redis))


def _entry(m: ModelInfo, live: list[dict]) -> dict:
    entry = m.as_dict()
    entry["loaded_on"] = [w["worker_id"] for w in live if m.id in w["models"]]
    return entry


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
async def prometheus(sessions: SessionMakerDep, redis: RedisDep,
                     gauges: QueueGaugesDep) -> Response:
    try:
        await gauges.refresh(sessions=sessions, redis=redis)
    except Exception:  # noqa: BLE001 - a scrape still returns the counters
        pass
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
