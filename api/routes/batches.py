"""OpenAI-compatible batches: POST/GET /v1/batches, GET /v1/batches/{id}, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, RedisDep, SessionDep, SettingsDep, StoreDep
from api.responses import BatchList, BatchObject, errors
from api.services import batches as svc

router = APIRouter(prefix="/v1/batches", tags=["batches"])


@router.post("", response_model=BatchObject,
             response_model_exclude_none=True, responses=errors(404, 413))
async def create_batch(batch_in: svc.BatchCreate, session: SessionDep, redis: RedisDep,
                       principal: PrincipalDep, settings: SettingsDep) -> dict:
    b = await svc.create_batch(session=session, redis=redis, principal=principal,
                               batch_in=batch_in, settings=settings)
    return svc.batch_object(b)


@router.get("", response_model=BatchList, response_model_exclude_none=True)
async def list_batches(
    session: SessionDep, principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    return await svc.list_batches(session=session, principal=principal, limit=limit, after=after)


@router.get("/{batch_id}", response_model=BatchObject,
             response_model_exclude_none=True, responses=errors(404))
async def get_batch(batch_id: str, session: SessionDep, principal: PrincipalDep) -> dict:
    b = await svc.get_batch(session=session, principal=principal, batch_id=batch_id)
    return svc.batch_object(b, await svc.live_counts(session, b))


@router.post("/{batch_id}/cancel", response_model=BatchObject,
             response_model_exclude_none=True,
             responses=errors(404, 409))
async def cancel_batch(batch_id: str, session: SessionDep, store: StoreDep, redis: RedisDep,
                       principal: PrincipalDep) -> dict:
    b = await svc.cancel_batch(session=session, store=store, redis=redis, principal=principal,
                               batch_id=batch_id)
    return svc.batch_object(b, await svc.live_counts(session, b))
