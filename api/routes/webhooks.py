"""Webhooks: the key's signing secret, the delivery log of a job or a batch, and
webhook endpoints (a key's subscriptions to event types, as OpenAI's).

A job (or a response, or a batch line) names its webhook when it is made; the control
process delivers and records each attempt (api/services/webhooks.py). These routes
let the key's owner verify signatures and see what was sent, when, and what the
receiver answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.deps import AutoSessionDep, PrincipalDep, SessionDep, SettingsDep, StoreDep
from api.responses import errors
from api.services import webhook_endpoints as endpoints
from api.services import webhooks as svc
from api.services.batches import get_batch
from common.responses_db import job_id_of

router = APIRouter(prefix="/v1", tags=["webhooks"])


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookSecretOut(_Shape):
    key: str


class Attempt(_Shape):
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float


class Delivery(_Shape):
    id: str
    object: Literal["webhook_delivery"]
    type: str
    url: str
    endpoint_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: int | None
    created_at: int | None
    delivered_at: int | None
    log: list[Attempt]
    payload: dict[str, Any]


class DeliveryList(_Shape):
    object: Literal["list"]
    data: list[Delivery]


class Endpoint(_Shape):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    events: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: int
    secret: str | None = None  # only when made or rotated


class EndpointList(_Shape):
    object: Literal["list"]
    data: list[Endpoint]


class EndpointDeleted(_Shape):
    id: str
    object: Literal["webhook_endpoint"]
    deleted: Literal[True]


@router.get("/webhooks/default/secret", response_model=WebhookSecretOut)
async def webhook_secret(request: Request, principal: PrincipalDep) -> JSONResponse:
    """The secret (`whsec_...`) this key's webhooks are signed with (Replicate's route)."""
    secret = await svc.secret_for(request.app.state.monkey.sessions, principal.key_id)
    return JSONResponse({"key": secret}, headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/webhook_deliveries", response_model=DeliveryList,
            responses=errors(404))
async def webhook_deliveries(job_id: str, principal: PrincipalDep, store: StoreDep,
                             session: AutoSessionDep) -> JSONResponse:
    """Every event sent to the job's webhook, each attempt and its answer. A response's
    id (`resp_...`) names its job too."""
    job_id = job_id_of(job_id) or job_id
    await store.get(job_id, owner_id=principal.key_id)  # 404 for another key's
    return JSONResponse({"object": "list",
                         "data": await svc.deliveries(session=session, subject_id=job_id)})


@router.get("/batches/{batch_id}/webhook_deliveries", response_model=DeliveryList,
            responses=errors(404))
async def batch_webhook_deliveries(batch_id: str, principal: PrincipalDep,
                                   session: AutoSessionDep) -> JSONResponse:
    """Every event sent to the batch's webhook (`webhook` when it was created)."""
    await get_batch(session=session, principal=principal, batch_id=batch_id)
    return JSONResponse({"object": "list",
                         "data": await svc.deliveries(session=session, subject_id=batch_id)})


# Webhook endpoints ----------------------------------------------------------------------

@router.post("/webhook_endpoints", response_model=Endpoint)
async def create_endpoint(body: endpoints.EndpointCreate, principal: PrincipalDep,
                          session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Subscribe a URL to event types; the answer shows its secret, once."""
    return JSONResponse(await endpoints.create(session=session, settings=settings,
                                               principal=principal, body=body),
                        headers={"Cache-Control": "no-store"})


@router.get("/webhook_endpoints", response_model=EndpointList)
async def list_endpoints(principal: PrincipalDep, session: SessionDep) -> JSONResponse:
    return JSONResponse(await endpoints.listing(session=session, principal=principal))


@router.get("/webhook_endpoints/{endpoint_id}", response_model=Endpoint, responses=errors(404))
async def get_endpoint(endpoint_id: str, principal: PrincipalDep,
                       session: SessionDep) -> JSONResponse:
    return JSONResponse(endpoints.view(await endpoints.get(
        session=session, principal=principal, endpoint_id=endpoint_id)))


@router.delete("/webhook_endpoints/{endpoint_id}", response_model=EndpointDeleted,
               responses=errors(404))
async def delete_endpoint(endpoint_id: str, principal: PrincipalDep,
                          session: SessionDep) -> JSONResponse:
    return JSONResponse(await endpoints.delete(session=session, principal=principal,
                                               endpoint_id=endpoint_id))


@router.post("/webhook_endpoints/{endpoint_id}/rotate_secret", response_model=Endpoint,
             responses=errors(404))
async def rotate_secret(endpoint_id: str, principal: PrincipalDep,
                        session: SessionDep) -> JSONResponse:
    """A new secret, shown once; a disabled endpoint is enabled again."""
    return JSONResponse(await endpoints.rotate(session=session, principal=principal,
                                               endpoint_id=endpoint_id),
                        headers={"Cache-Control": "no-store"})


@router.get("/webhook_endpoints/{endpoint_id}/deliveries", response_model=DeliveryList,
            responses=errors(404))
async def endpoint_deliveries(endpoint_id: str, principal: PrincipalDep, session: SessionDep,
                              limit: Annotated[int, Query(ge=1, le=100)] = 50
                              ) -> JSONResponse:
    """The endpoint's latest deliveries, newest first, each with every attempt."""
    return JSONResponse(await endpoints.deliveries(session=session, principal=principal,
                                                   endpoint_id=endpoint_id, limit=limit))
