"""Webhooks: the key's signing secret and the delivery log of a job or a batch.

A job (or a response, or a batch line) names its webhook when it is made; the control
process delivers and records each attempt (api/services/webhooks.py). These routes
let the key's owner verify signatures and see what was sent, when, and what the
receiver answered.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.deps import AutoSessionDep, PrincipalDep, StoreDep
from api.responses import errors
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
