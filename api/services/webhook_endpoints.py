"""Webhook endpoints (/v1/webhook_endpoints): a key subscribes a URL to event types of
all its jobs, responses and batches, as with OpenAI's webhook endpoints. Each has its
own `whsec_` secret, shown when it is made or rotated and never again. The control
process hands events to them (api/services/webhooks.py); a deleted endpoint gets
nothing more."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Principal
from api.services.webhooks import delivery_view
from common.db import utcnow
from common.errors import InvalidRequest, NotFound
from common.ids import new_id
from common.settings import Settings
from common.webhooks import (
    ENDPOINT_EVENTS,
    EndpointEvent,
    WebhookDelivery,
    WebhookEndpoint,
    check_url_target,
    new_secret,
)

MAX_PER_KEY = 20


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2000, pattern=r"^[hH][tT][tT][pP][sS]?://[^\s]+$")
    events: list[EndpointEvent] = Field(min_length=1, max_length=len(ENDPOINT_EVENTS))


def view(ep: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    out = {"id": ep.id, "object": "webhook_endpoint", "url": ep.url, "events": ep.events,
           "status": ep.status, "disabled_reason": ep.disabled_reason,
           "created_at": int(ep.created_at.timestamp())}
    if secret is not None:
        out["secret"] = secret
    return out


async def create(*, session: AsyncSession, settings: Settings, principal: Principal,
                 body: EndpointCreate) -> dict[str, Any]:
    await check_url_target(body.url, allow_private=settings.webhook_allow_private)
    mine = (await session.execute(select(WebhookEndpoint.id).where(
        WebhookEndpoint.owner_id == principal.key_id,
        WebhookEndpoint.deleted_at.is_(None)))).all()
    if len(mine) >= MAX_PER_KEY:
        raise InvalidRequest(f"a key has at most {MAX_PER_KEY} webhook endpoints")
    now = utcnow()
    ep = WebhookEndpoint(id=new_id("we"), owner_id=principal.key_id, url=body.url,
                         events=sorted(set(body.events)), secret=new_secret(),
                         status="enabled", created_at=now, scanned_until=now)
    session.add(ep)
    await session.commit()
    return view(ep, secret=ep.secret)


async def get(*, session: AsyncSession, principal: Principal, endpoint_id: str
              ) -> WebhookEndpoint:
    ep = await session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
    if ep is None or ep.owner_id != principal.key_id or ep.deleted_at is not None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return ep


async def listing(*, session: AsyncSession, principal: Principal) -> dict[str, Any]:
    rows = (await session.execute(select(WebhookEndpoint).where(
        WebhookEndpoint.owner_id == principal.key_id, WebhookEndpoint.deleted_at.is_(None))
        .order_by(WebhookEndpoint.id))).scalars()
    return {"object": "list", "data": [view(ep) for ep in rows]}


async def delete(*, session: AsyncSession, principal: Principal, endpoint_id: str
                 ) -> dict[str, Any]:
    ep = await get(session=session, principal=principal, endpoint_id=endpoint_id)
    await session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == ep.id)
                          .values(deleted_at=utcnow()))
    await session.commit()
    return {"id": ep.id, "object": "webhook_endpoint", "deleted": True}


async def rotate(*, session: AsyncSession, principal: Principal, endpoint_id: str
                 ) -> dict[str, Any]:
    """A new secret (deliveries from now on are signed with it); a disabled endpoint is
    enabled again, as a rotation is what a user does after fixing a receiver."""
    ep = await get(session=session, principal=principal, endpoint_id=endpoint_id)
    secret = new_secret()
    await session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == ep.id).values(
        secret=secret, status="enabled", disabled_reason=None))
    await session.commit()
    ep = await get(session=session, principal=principal, endpoint_id=endpoint_id)
    return view(ep, secret=secret)


async def deliveries(*, session: AsyncSession, principal: Principal, endpoint_id: str,
                     limit: int) -> dict[str, Any]:
    ep = await get(session=session, principal=principal, endpoint_id=endpoint_id)
    rows = (await session.execute(select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == ep.id).order_by(WebhookDelivery.id.desc())
        .limit(limit))).scalars()
    return {"object": "list", "data": [delivery_view(d) for d in rows]}


__all__ = ["EndpointCreate", "create", "delete", "deliveries", "get", "listing", "rotate"]
