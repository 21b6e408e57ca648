"""Operators: the last hour of the queue gauges (api/services/ops_history.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.deps import PrincipalDep, RedisDep, SettingsDep
from api.responses import QueueStats
from api.services.ops_history import read_history

router = APIRouter(prefix="/v1/ops", tags=["queues"])


class QueueSample(QueueStats):
    finished: int  # jobs that finished since the previous sample


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: float
    interval_s: float
    queues: list[QueueSample]


class History(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object: Literal["list"]
    sample_s: float
    data: list[Sample]


@router.get("/history", response_model=History)
async def history(redis: RedisDep, settings: SettingsDep, _p: PrincipalDep,
                  since: Annotated[float | None, Query(ge=0)] = None) -> JSONResponse:
    """The queues sampled by the control process every MONKEY_OPS_SAMPLE_S over the last
    hour, oldest first: per queue, GET /v1/queues's figures and the jobs finished since
    the previous sample. `since` (Unix seconds): only the samples after it."""
    return JSONResponse({"object": "list", "sample_s": settings.ops_sample_s,
                         "data": await read_history(redis, since=since)})
