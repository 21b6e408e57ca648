"""Signed webhooks: what a delivery is, how it is signed, and where it may go.

Standard Webhooks (standardwebhooks.com), as OpenAI and Replicate send them: headers
`webhook-id` (the event id, the same on every retry, so a receiver can drop
duplicates), `webhook-timestamp` (Unix seconds of this attempt) and
`webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed by the
base64 bytes after `whsec_`). `openai.OpenAI().webhooks.unwrap()` and the
`standardwebhooks` package verify them.

A job names its own URL (`webhook`, and `webhook_events_filter` as Replicate's
predictions do); deliveries are signed with its key's secret (one per key, made on
first use, shown by GET /v1/webhooks/default/secret). A webhook endpoint
(/v1/webhook_endpoints, as OpenAI's) subscribes a URL to event types of all the key's
jobs, responses and batches, with a secret of its own. Every delivery is a row of the
delivery log, written by the control process when the job starts or ends and sent
from there with retries, never from a request or a worker's job path. The secret is
only ever read to sign: it is never logged and never stored in a delivery row.

URLs that resolve to private, loopback, link-local or otherwise non-public addresses
are refused (SSRF) unless MONKEY_WEBHOOK_ALLOW_PRIVATE is set, when a job is
submitted and again at each delivery (DNS may have changed since).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, utcnow
from common.errors import InvalidRequest

SECRET_PREFIX = "whsec_"
EVENTS = ("start", "completed")
# What a webhook endpoint may subscribe to (OpenAI's names for responses and batches).
EndpointEvent = Literal[
    "job.succeeded", "job.failed", "job.cancelled", "job.expired",
    "response.completed", "response.failed", "response.cancelled", "response.incomplete",
    "batch.completed", "batch.failed", "batch.cancelled", "batch.expired",
]
ENDPOINT_EVENTS: tuple[str, ...] = get_args(EndpointEvent)


class WebhookSecret(Base):
    __tablename__ = "webhook_secrets"

    owner_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """A key's subscription to event types (OpenAI's webhook endpoints), with a secret
    of its own. `scanned_until`: events up to here were handed to the delivery log."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_owner_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))  # enabled | disabled
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    scanned_until: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One event for one URL: its body, and every attempt to deliver it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # An event is handed to the log once, whatever process notices it.
        UniqueConstraint("subject_id", "type", "url", "endpoint_id",
                         name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_...: webhook-id
    owner_id: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40))  # the job or the batch
    # The endpoint it goes to ("" for a job's or a batch's own webhook URL).
    endpoint_id: Mapped[str] = mapped_column(String(40), default="")
    url: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
            "content-type": "application/json", "user-agent": "monkey-coder-webhooks/1"}


def check_url_syntax(url: str) -> str:
    """An http(s) URL with a host; InvalidRequest otherwise."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        ok = False
    if not ok:
        raise InvalidRequest("webhook must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidRequest("webhook URLs may not carry credentials")
    return url


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_url_target(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host resolves to a non-public address (unless allowed).
    Raises InvalidRequest with the reason; resolution failures count as refusals."""
    check_url_syntax(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        raise InvalidRequest(f"webhook host {host!r} does not resolve: {exc}") from None
    addresses = {info[4][0] for info in infos}
    private = sorted(a for a in addresses if not _public(str(a)))
    if private:
        raise InvalidRequest(f"webhook host {host!r} resolves to a non-public address "
                             f"({private[0]}); set MONKEY_WEBHOOK_ALLOW_PRIVATE to allow it")


__all__ = ["ENDPOINT_EVENTS", "EVENTS", "EndpointEvent", "WebhookDelivery", "WebhookEndpoint",
           "WebhookSecret", "check_url_syntax", "check_url_target", "headers", "new_secret",
           "sign"]
