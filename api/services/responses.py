"""The Responses API behind its routes: a response is a job on the same queue, store
and event log as every other, plus a row of what only the Responses API shows
(common/responses_db.py). Keyword-only, like the other services.

- create: the job and its response row in one transaction, then the publish;
- read: the job's envelope and the row, as a response object;
- stream: the job's event log (AsyncEventLog.follow, the one reader) turned into typed
  events by `EventStream`, from the start or after a `sequence_number`;
- cancel: through the job store, so a response ends in exactly one terminal state,
  the job's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api import retention
from api.deps import Principal
from api.metrics import JOBS_SUBMITTED
from api.services import fair
from api.services import jobs as jobs_svc
from api.services.completions import cancel_quietly
from api.services.responses_shapes import (
    EventStream,
    ResponseRequest,
    input_item,
    response_object,
)
from common.db import Job, utcnow
from common.errors import InvalidRequest
from common.events import AsyncEventLog
from common.jobs import TERMINAL, JobStatus, envelope
from common.producer import Producer
from common.responses_db import ResponseRow, job_id_of, response_id
from common.settings import Settings
from common.store import AsyncJobStore
from common.webhooks import check_url_target

log = logging.getLogger("monkey.api")

_BLOCK_MS = 5000
_DONE_GRACE_MS = 1000
_CANCEL_WAIT_S = 10.0


async def create(*, session: AsyncSession, producer: Producer, settings: Settings,
                 queued_counts: dict, principal: Principal, req: ResponseRequest,
                 priority: str = "interactive") -> tuple[Any, ResponseRow]:
    """Write the job and its response row together, then publish the job."""
    history = await _history(session=session, principal=principal,
                             previous=req.previous_response_id)
    job_in = req.job(history, priority)
    job = jobs_svc.new_job_row(settings=settings, principal=principal, job_in=job_in)
    if job.webhook is not None:
        await check_url_target(job.webhook, allow_private=settings.webhook_allow_private)
    queued = await jobs_svc.check_queued_cap(session=session, settings=settings,
                                             queued_counts=queued_counts, principal=principal)
    # Fair share between keys, as in jobs_svc.create_job (api/services/fair.py).
    job.held_at = await fair.hold_at(session=session, settings=settings, priority=job.priority,
                                     queued_counts=queued_counts, principal=principal,
                                     queued=queued)
    items = req.messages()
    row = ResponseRow(job_id=job.id, owner_id=principal.key_id,
                      previous_response_id=req.previous_response_id,
                      instructions=req.instructions, input_items=items,
                      conversation=history + items, background=bool(req.background),
                      store=req.store is not False, created_at=job.created_at)
    await session.execute(jobs_svc._INSERT_JOB, jobs_svc.row_values(job))
    session.add(row)
    await session.commit()
    if job.held_at is None:
        await producer.publish_soon(job_id=job.id, kind=job.kind, model=job.model,
                                    queue=job.queue, priority=job.priority,
                                    attempt_hint=job.attempts)
    JOBS_SUBMITTED.labels(job.kind, job.model, job.priority).inc()
    return job, row


async def _history(*, session: AsyncSession, principal: Principal, previous: str | None
                   ) -> list[dict[str, str]]:
    """The conversation a previous response ended with: its turns and its output."""
    if previous is None:
        return []
    job_id = job_id_of(previous)
    row = await _row(session, principal, job_id) if job_id else None
    if row is None or job_id is None:
        raise await retention.not_found(session, noun="previous response", asked=previous,
                                        swept_id=job_id, owner_id=principal.key_id)
    prev = (await session.execute(select(Job.status, Job.output).where(Job.id == job_id))).first()
    if prev is None or prev.status != JobStatus.SUCCEEDED:
        raise InvalidRequest(f"previous response {previous!r} has not completed; "
                             "a conversation continues from a completed response")
    text = (prev.output or {}).get("text", "")
    return [*row.conversation, {"role": "assistant", "content": text}]


async def _row(session: AsyncSession, principal: Principal, job_id: str | None
               ) -> ResponseRow | None:
    if job_id is None:
        return None
    row = await session.get(ResponseRow, job_id)
    if row is None or row.owner_id != principal.key_id or row.deleted_at is not None:
        return None
    return row


async def lookup(*, session: AsyncSession, store: AsyncJobStore, principal: Principal,
                 resp_id: str) -> tuple[dict, ResponseRow]:
    """A stored response of this key: (job envelope, row); NotFound otherwise."""
    row = await _row(session, principal, job_id_of(resp_id))
    if row is None or not row.store:
        raise await retention.not_found(session, noun="response", asked=resp_id,
                                        swept_id=job_id_of(resp_id), owner_id=principal.key_id)
    job = await store.get(row.job_id, owner_id=principal.key_id)
    return envelope(job), row


async def cancel(*, session: AsyncSession, store: AsyncJobStore, events: AsyncEventLog,
                 principal: Principal, resp_id: str) -> dict:
    """Cancel a background response through the job store; wait (a little) for the worker
    to stop, so the answer is the response's one terminal state when it can be."""
    env, row = await lookup(session=session, store=store, principal=principal, resp_id=resp_id)
    if not row.background:
        raise InvalidRequest("only a response created with background=true can be cancelled")
    await session.close()
    job = await store.cancel(row.job_id, owner_id=principal.key_id)
    env = envelope(job)
    if job.status not in TERMINAL:
        with contextlib.suppress(TimeoutError):
            env = await asyncio.wait_for(jobs_svc.final_envelope(
                events=events, store=store, job_id=row.job_id), _CANCEL_WAIT_S)
    return response_object(env, row)


async def delete(*, session: AsyncSession, store: AsyncJobStore, principal: Principal,
                 resp_id: str) -> dict:
    """Mark the response deleted (it answers 404 from now on); a job still going is
    cancelled, as nobody can read its answer any more."""
    env, row = await lookup(session=session, store=store, principal=principal, resp_id=resp_id)
    await session.execute(update(ResponseRow).where(ResponseRow.job_id == row.job_id)
                          .values(deleted_at=utcnow()))
    await session.commit()
    if env["status"] not in TERMINAL:
        await cancel_quietly(store=store, principal=principal, job_id=row.job_id)
    return {"id": resp_id, "object": "response", "deleted": True}


async def input_items(*, session: AsyncSession, store: AsyncJobStore, principal: Principal,
                      resp_id: str, limit: int, order: str, after: str | None) -> dict:
    _, row = await lookup(session=session, store=store, principal=principal, resp_id=resp_id)
    items = [input_item(row.job_id, i, m) for i, m in enumerate(row.input_items)]
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "has_more": len(items) > limit,
            "first_id": page[0]["id"] if page else "", "last_id": page[-1]["id"] if page else ""}


def sse(event: dict) -> bytes:
    # The sequence number doubles as the SSE id: an EventSource that reconnects with
    # Last-Event-ID resumes where it was, as starting_after does.
    return (f"id: {event['sequence_number']}\nevent: {event['type']}\n"
            f"data: {json.dumps(event, separators=(',', ':'))}\n\n").encode()


async def stream(*, events: AsyncEventLog, store: AsyncJobStore, principal: Principal,
                 job: dict, row: ResponseRow, after: int = -1, cancel_on_hangup: bool = False
                 ) -> AsyncIterator[bytes]:
    """The response's typed events after sequence number `after`, live until its
    terminal event. `job`: the job's envelope (its fixed fields make the snapshots)."""
    derived = EventStream(job, row)

    def out(evs: list[dict]) -> bytes:
        return b"".join(sse(e) for e in evs if e["sequence_number"] > after)

    finished = False
    try:
        yield out(derived.opening())
        async for arrived in events.follow(
                row.job_id, block_ms=_BLOCK_MS, grace_ms=_DONE_GRACE_MS, count=500,
                lookup=functools.partial(store.final_envelope, row.job_id)):
            chunk = b"".join(out(derived.feed(e.type, e.data)) for e in arrived)
            if chunk:
                yield chunk
            elif not arrived:  # a quiet spell
                yield b": keep-alive\n\n"
            if derived.ended:
                finished = True
                return
    finally:
        if cancel_on_hangup and not finished:
            await cancel_quietly(store=store, principal=principal, job_id=row.job_id)


__all__ = ["cancel", "create", "delete", "input_items", "lookup", "response_id", "stream"]
