"""Webhook deliveries, run by the control process (api/control.py), never on a request's
or a worker's path: a job's end costs its worker nothing more than the status write
it makes anyway.

Each pass:
- `enqueue`: jobs with a webhook whose next event is due (`jobs.webhook_next`: `start`
  once the job left the queue, `completed` once it ended), and batches with one that
  ended, get a row in the delivery log. Moving `webhook_next` on is a compare-and-set
  in the same transaction as the insert, so of several control processes exactly one
  hands each event over; the unique (subject, type, url, endpoint) makes a second
  insert impossible anyway. Webhook endpoints (a key's subscriptions) are scanned from
  where they last looked: the key's jobs, responses and batches that ended since.
- `deliver`: due rows are claimed (a conditional UPDATE sets `claimed_until`), POSTed
  signed, and the outcome written, fenced by the claim: 2xx delivers; anything else
  retries with exponential backoff and jitter (MONKEY_WEBHOOK_BACKOFF_S doubling, at
  most an hour apart) until MONKEY_WEBHOOK_RETRY_S after the event, then fails. A
  process that dies mid-delivery leaves a claim that lapses: the row is sent again.
  So delivery is at least once; `webhook-id` lets a receiver drop a repeat. An
  endpoint whose delivery failed for the whole window is disabled, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.responses_shapes import status_of
from common.batches_db import Batch
from common.db import Job, utcnow
from common.errors import InvalidRequest
from common.ids import new_id
from common.jobs import BATCH_TERMINAL, JOB_COLUMNS, TERMINAL, envelope
from common.responses_db import ResponseRow, response_id
from common.settings import Settings
from common.webhooks import (
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
    check_url_target,
    headers,
    new_secret,
)

log = logging.getLogger("monkey.webhooks")

POLL_S = 0.2
_PAGE = 100
_CLAIM_S = 60.0
_TIMEOUT_S = 10.0
_MAX_BACKOFF_S = 3600.0
_CONCURRENCY = 32
_BODY_SNIPPET = 200
# How far back an endpoint's scan looks again, for jobs whose end committed late (an
# end's time is taken just before its one statement; the reconciler's may wait up to
# 2 s for a row lock).
_SCAN_LAG = timedelta(seconds=10)


async def secret_for(sessions: async_sessionmaker[AsyncSession], owner_id: str) -> str:
    """The key's signing secret, made on first use."""
    async with sessions() as s:
        row = await s.get(WebhookSecret, owner_id)
        if row is not None:
            return row.secret
        s.add(WebhookSecret(owner_id=owner_id, secret=new_secret(), created_at=utcnow()))
        try:
            await s.commit()
        except IntegrityError:  # made meanwhile by another process
            await s.rollback()
    async with sessions() as s:
        row = await s.get(WebhookSecret, owner_id)
        assert row is not None
        return row.secret


def event_types(env: dict, is_response: bool) -> tuple[str, str]:
    """(start type, end type) of a job's events."""
    if is_response:
        end = status_of(env) if env["status"] in TERMINAL else "completed"
        return "response.in_progress", f"response.{end}"
    return "job.started", f"job.{env['status']}"


def _payload(evt_id: str, type_: str, env: dict, is_response: bool) -> dict[str, Any]:
    # OpenAI's event shape; a response's data is its id (as OpenAI sends), a job's its
    # envelope (as Replicate sends its prediction).
    data = {"id": response_id(env["id"])} if is_response else env
    return {"id": evt_id, "object": "event", "created_at": int(time.time()), "type": type_,
            "data": data}


class WebhookDispatcher:
    """The delivery loop of one control process."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], settings: Settings,
                 client: httpx.AsyncClient | None = None):
        self.sessions = sessions
        self.settings = settings
        self.client = client or httpx.AsyncClient(timeout=_TIMEOUT_S, follow_redirects=False)
        self._task: asyncio.Task[None] | None = None
        self._sem = asyncio.Semaphore(_CONCURRENCY)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                await self.enqueue()
                while await self.deliver():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database away: the next pass retries
                log.warning("webhook pass failed: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(POLL_S)

    # Handing events to the log ---------------------------------------------------------

    async def enqueue(self) -> int:
        due = select(*JOB_COLUMNS, ResponseRow.job_id.label("response_job")).outerjoin(
            ResponseRow, ResponseRow.job_id == Job.id).where(
            Job.webhook_next.is_not(None),
            or_(and_(Job.webhook_next == "start", Job.status != "queued"),
                and_(Job.webhook_next == "completed", Job.status.in_(list(TERMINAL)))),
        ).limit(_PAGE)
        async with self.sessions() as s:
            rows = (await s.execute(due)).all()
        n = 0
        if rows:  # one transaction for the page: a commit per job costs more than its work
            async with self.sessions() as s:
                for row in rows:
                    n += await self._hand_over(s, row)
                await s.commit()
        return n + await self._enqueue_batches() + await self._enqueue_endpoints()

    async def _enqueue_endpoints(self) -> int:
        async with self.sessions() as s:
            endpoints = list((await s.execute(select(WebhookEndpoint).where(
                WebhookEndpoint.status == "enabled",
                WebhookEndpoint.deleted_at.is_(None)))).scalars())
        n = 0
        for ep in endpoints:
            n += await self._scan_endpoint(ep)
        return n

    async def _scan_endpoint(self, ep: WebhookEndpoint) -> int:
        """Hand over the events of the key's jobs, responses and batches that ended since
        the endpoint last looked, less a margin for late commits. The jobs are read in
        pages of (finished_at, id) order, so that a burst of ends within the margin is
        read through, never the same first page again; a job whose event this endpoint
        has already is left out in the query, and a repeat is dropped by the unique key."""
        now = utcnow()
        since = max(ep.scanned_until - _SCAN_LAG, ep.created_at)
        wanted = set(ep.events)
        statuses = ([str(t) for t in TERMINAL] if any(t.startswith("response.") for t in wanted)
                    else [t.split(".", 1)[1] for t in wanted if t.startswith("job.")])
        n = 0
        after: tuple[Any, str] = (since, "")
        while statuses:
            async with self.sessions() as s:
                jobs: list[Any] = list(await s.execute(
                    select(*JOB_COLUMNS, ResponseRow.job_id.label("response_job"))
                    .outerjoin(ResponseRow, ResponseRow.job_id == Job.id)
                    .where(Job.owner_id == ep.owner_id, Job.finished_at <= now,
                           or_(Job.finished_at > after[0],
                               and_(Job.finished_at == after[0], Job.id > after[1])),
                           Job.batch_id.is_(None), Job.status.in_(statuses),
                           ~select(WebhookDelivery.id).where(
                               WebhookDelivery.subject_id == Job.id,
                               WebhookDelivery.endpoint_id == ep.id).exists())
                    .order_by(Job.finished_at, Job.id).limit(_PAGE)))
            items: list[tuple[str, str, dict[str, Any]]] = []
            for job in jobs:
                env = envelope(job)
                is_response = job.response_job is not None
                _, type_ = event_types(env, is_response)
                if type_ in wanted:
                    items.append((job.id, type_, {"id": response_id(job.id)} if is_response
                                  else env))
            n += await self._hand_over_to(ep, items, now)
            if len(jobs) < _PAGE:
                break
            after = (jobs[-1].finished_at, jobs[-1].id)
        ended = func.coalesce(Batch.completed_at, Batch.failed_at, Batch.expired_at,
                              Batch.cancelled_at)
        async with self.sessions() as s:
            batches = (await s.execute(select(Batch.id, Batch.status).where(
                Batch.owner_id == ep.owner_id, Batch.status.in_(list(BATCH_TERMINAL)),
                ended > since, ended <= now))).all()
        n += await self._hand_over_to(ep, [(b.id, f"batch.{b.status}", {"id": b.id})
                                           for b in batches if f"batch.{b.status}" in wanted],
                                      now)
        async with self.sessions() as s:
            await s.execute(update(WebhookEndpoint).where(
                WebhookEndpoint.id == ep.id, WebhookEndpoint.scanned_until < now)
                .values(scanned_until=now))
            await s.commit()
        return n

    async def _hand_over_to(self, ep: WebhookEndpoint,
                            items: list[tuple[str, str, dict[str, Any]]], now: Any) -> int:
        """Delivery rows for `items` (subject, type, data) to endpoint `ep`; repeats are
        dropped by the unique key."""
        if not items:
            return 0
        rows = []
        for subject, type_, data in items:
            evt = new_id("evt")
            rows.append({"id": evt, "owner_id": ep.owner_id, "subject_id": subject,
                         "endpoint_id": ep.id, "url": ep.url, "type": type_,
                         "payload": {"id": evt, "object": "event",
                                     "created_at": int(time.time()), "type": type_,
                                     "data": data},
                         "status": "pending", "attempts": 0, "next_attempt_at": now,
                         "log": [], "created_at": now})
        insert = sqlite_insert if self.settings.is_sqlite else pg_insert
        async with self.sessions() as s:
            await s.execute(insert(WebhookDelivery).on_conflict_do_nothing(), rows)
            await s.commit()
        return len(rows)

    async def _enqueue_batches(self) -> int:
        due = select(Batch.id, Batch.owner_id, Batch.status, Batch.webhook).where(
            Batch.webhook_next.is_not(None), Batch.status.in_(list(BATCH_TERMINAL))
        ).limit(_PAGE)
        async with self.sessions() as s:
            rows = (await s.execute(due)).all()
        now = utcnow()
        for b in rows:
            async with self.sessions() as s:
                moved = await s.execute(update(Batch).where(
                    Batch.id == b.id, Batch.webhook_next.is_not(None)).values(webhook_next=None))
                if not getattr(moved, "rowcount", 0):
                    await s.rollback()
                    continue
                evt, type_ = new_id("evt"), f"batch.{b.status}"
                s.add(WebhookDelivery(
                    id=evt, owner_id=b.owner_id, subject_id=b.id, url=b.webhook, type=type_,
                    payload={"id": evt, "object": "event", "created_at": int(time.time()),
                             "type": type_, "data": {"id": b.id}},
                    status="pending", attempts=0, next_attempt_at=now, log=[], created_at=now))
                await s.commit()
        return len(rows)

    async def _hand_over(self, s: AsyncSession, job: Any) -> int:
        env = envelope(job)
        wanted = job.webhook_events or ["completed"]
        start_t, end_t = event_types(env, job.response_job is not None)
        types = []
        if job.webhook_next == "start" and job.started_at is not None:
            types.append(start_t)
        ended = job.status in TERMINAL
        if ended and "completed" in wanted:
            types.append(end_t)
        nxt = None if ended or "completed" not in wanted else "completed"
        now = utcnow()
        moved = await s.execute(update(Job).where(
            Job.id == job.id, Job.webhook_next == job.webhook_next).values(webhook_next=nxt))
        if not getattr(moved, "rowcount", 0):
            return 0  # another control process took it
        for type_ in types:
            evt = new_id("evt")
            s.add(WebhookDelivery(
                id=evt, owner_id=job.owner_id, subject_id=job.id, url=job.webhook,
                type=type_, payload=_payload(evt, type_, env, job.response_job is not None),
                status="pending", attempts=0, next_attempt_at=now, log=[], created_at=now))
        return len(types)

    # Delivering ------------------------------------------------------------------------

    async def deliver(self) -> int:
        """Claim and send the due deliveries; how many were claimed."""
        now = utcnow()
        until = now + timedelta(seconds=_CLAIM_S)
        due = select(WebhookDelivery.id).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
        ).order_by(WebhookDelivery.next_attempt_at).limit(_PAGE)
        async with self.sessions() as s:
            ids = list((await s.execute(due)).scalars())
            if not ids:
                return 0
            claimed = list((await s.execute(
                update(WebhookDelivery).where(
                    WebhookDelivery.id.in_(ids), WebhookDelivery.status == "pending",
                    or_(WebhookDelivery.claimed_until.is_(None),
                        WebhookDelivery.claimed_until < now))
                .values(claimed_until=until)
                .returning(WebhookDelivery.id, WebhookDelivery.owner_id, WebhookDelivery.url,
                           WebhookDelivery.payload, WebhookDelivery.attempts,
                           WebhookDelivery.created_at, WebhookDelivery.log,
                           WebhookDelivery.endpoint_id))).all())
            endpoint_ids = {r.endpoint_id for r in claimed if r.endpoint_id}
            endpoints = {e.id: e for e in (await s.execute(select(
                WebhookEndpoint.id, WebhookEndpoint.secret, WebhookEndpoint.status,
                WebhookEndpoint.deleted_at).where(WebhookEndpoint.id.in_(endpoint_ids)))).all()}
            await s.commit()
        owner_secrets: dict[str, str] = {}
        for row in claimed:
            if not row.endpoint_id and row.owner_id not in owner_secrets:
                owner_secrets[row.owner_id] = await secret_for(self.sessions, row.owner_id)

        def secret(row: Any) -> str | None:
            """The row's signing secret; None when its endpoint is gone or disabled."""
            if not row.endpoint_id:
                return owner_secrets[row.owner_id]
            ep = endpoints.get(row.endpoint_id)
            return ep.secret if ep and ep.status == "enabled" and not ep.deleted_at else None

        outcomes = await asyncio.gather(*(self._send(row, secret(row)) for row in claimed))
        async with self.sessions() as s:  # the outcomes in one transaction
            for row, outcome in zip(claimed, outcomes, strict=True):
                await self._record(s, row, until, *outcome)
            await s.commit()
        return len(claimed)

    async def _send(self, row: Any, secret: str | None
                    ) -> tuple[int | None, str | None, float, bool]:
        """(status code, error, seconds taken, final) of one attempt."""
        if secret is None:  # nobody wants it any more
            return None, "the endpoint was disabled or deleted", 0.0, True
        async with self._sem:
            body = json.dumps(row.payload, separators=(",", ":")).encode()
            started = time.monotonic()
            code: int | None = None
            error: str | None = None
            try:
                await check_url_target(row.url, allow_private=self.settings.webhook_allow_private)
                resp = await self.client.post(row.url, content=body, headers=headers(
                    secret, row.id, int(time.time()), body))
                code = resp.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}: {resp.text[:_BODY_SNIPPET]}"
            except InvalidRequest as exc:
                error = f"refused: {exc.message}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:_BODY_SNIPPET * 2]
            return code, error, time.monotonic() - started, False

    async def _record(self, s: AsyncSession, row: Any, claim: Any, code: int | None,
                      error: str | None, took_s: float, final: bool) -> None:
        now = utcnow()
        attempts = row.attempts + 1
        entry = {"at": now.isoformat().replace("+00:00", "Z"), "status_code": code,
                 "error": error, "duration_ms": round(took_s * 1000, 1)}
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": code,
                                  "last_error": error, "claimed_until": None,
                                  "log": [*(row.log or []), entry][-50:]}
        if error is None:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
        else:
            delay = min(self.settings.webhook_backoff_s * 2 ** (attempts - 1), _MAX_BACKOFF_S)
            nxt = now + timedelta(seconds=delay * (0.5 + random.random() / 2))
            if final or (nxt - row.created_at).total_seconds() > self.settings.webhook_retry_s:
                values.update(status="failed", next_attempt_at=None)
            else:
                values.update(next_attempt_at=nxt)
            log.info("webhook delivery failed", extra={
                "delivery": row.id, "attempt": attempts, "error": error})
        await s.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == row.id, WebhookDelivery.claimed_until == claim)
            .values(**values))
        if values.get("status") == "failed" and row.endpoint_id and not final:
            # An endpoint that failed for the whole retry window is switched off.
            await s.execute(update(WebhookEndpoint).where(
                WebhookEndpoint.id == row.endpoint_id, WebhookEndpoint.status == "enabled")
                .values(status="disabled", disabled_reason=(
                    f"deliveries failed for {self.settings.webhook_retry_s:g} s; "
                    f"the last: {error}")))


def delivery_view(d: WebhookDelivery) -> dict[str, Any]:
    """A delivery as GET .../webhook_deliveries shows it (no secret in it, ever)."""
    def unix(dt: Any) -> int | None:
        return int(dt.timestamp()) if dt is not None else None

    return {"id": d.id, "object": "webhook_delivery", "type": d.type, "url": d.url,
            "endpoint_id": d.endpoint_id or None,
            "status": d.status, "attempts": d.attempts, "last_status_code": d.last_status_code,
            "last_error": d.last_error, "next_attempt_at": unix(d.next_attempt_at),
            "created_at": unix(d.created_at), "delivered_at": unix(d.delivered_at),
            "log": d.log or [], "payload": d.payload}


async def deliveries(*, session: AsyncSession, subject_id: str) -> list[dict[str, Any]]:
    """The delivery log of a job or a batch."""
    rows = (await session.execute(select(WebhookDelivery).where(
        WebhookDelivery.subject_id == subject_id).order_by(WebhookDelivery.id))).scalars()
    return [delivery_view(d) for d in rows]


__all__ = ["WebhookDispatcher", "deliveries", "delivery_view", "secret_for"]
