"""OpenAI requests served as jobs: submit one, then wait for its `done` on the job's
Redis event stream, or turn its token events into chat completion chunks.

A request whose client hangs up cancels its job: nobody else asked for the answer,
and a worker should not keep generating it. So does a stream that the API's shutdown
ends (api/shutdown.py): the chunk protocol cannot resume on another instance, so the
stream's last chunk is an error that says to retry the request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Principal
from api.errors import error_body
from api.metrics import JOBS_SUBMITTED
from api.services import jobs as jobs_svc
from api.services.openai_shapes import ChatRequest, chat_chunk, job_failure, unix, usage_chunk
from common.db import Job
from common.errors import Conflict, NotFound
from common.events import AsyncEventLog
from common.jobs import envelope
from common.producer import Producer
from common.schemas import JobCreate
from common.settings import Settings
from common.store import AsyncJobStore

log = logging.getLogger("monkey.api")

async def submit(*, session: AsyncSession, producer: Producer, settings: Settings,
                 queued_counts: dict, principal: Principal, job_in: JobCreate) -> Job:
    job, _ = await jobs_svc.create_job(session=session, producer=producer, settings=settings,
                                       queued_counts=queued_counts, principal=principal,
                                       job_in=job_in)
    JOBS_SUBMITTED.labels(job.kind, job.model, job.priority).inc()
    return job


async def follow(*, events: AsyncEventLog, store: AsyncJobStore, job_id: str
                 ) -> AsyncIterator[tuple[str, dict]]:
    """The job's events as (type, data), ending with `done` (common.events' reader)."""
    async for arrived in events.follow(
            job_id, block_ms=jobs_svc.FOLLOW_BLOCK_MS, grace_ms=jobs_svc.FOLLOW_GRACE_MS,
            count=500,
            lookup=functools.partial(store.final_envelope, job_id)):
        for event in arrived:
            yield event.type, event.data


async def wait_done(*, events: AsyncEventLog, store: AsyncJobStore, principal: Principal,
                    job_id: str, is_disconnected: Callable[[], Awaitable[bool]]
                    ) -> dict | None:
    """The job's final envelope; None (and the job cancelled) if the client hung up."""

    waiter = asyncio.create_task(jobs_svc.final_envelope(events=events, store=store,
                                                         job_id=job_id))
    try:
        while True:
            finished, _ = await asyncio.wait({waiter}, timeout=1.0)
            if finished:
                return waiter.result()
            if await is_disconnected():
                await cancel_quietly(store=store, principal=principal, job_id=job_id)
                return None
    finally:
        waiter.cancel()


async def cancel_quietly(*, store: AsyncJobStore, principal: Principal, job_id: str) -> None:
    # Shielded: this runs while the request that owned the job is being torn down.
    with anyio.CancelScope(shield=True):
        try:
            await jobs_svc.cancel_job(store=store, principal=principal, job_id=job_id)
        except (Conflict, NotFound):
            pass  # it ended meanwhile
        except Exception:  # noqa: BLE001 - best effort; the job still ends on its own
            log.exception("could not cancel job %s after its client left", job_id)


def sse_data(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


# Errors inside a stream: OpenAI's error body, as the SDK raises it (APIError).
SHUTDOWN_CHUNK = sse_data(error_body("service_unavailable",
                                     "the server is shutting down; retry the request",
                                     code="server_shutting_down"))


async def chat_stream(*, events: AsyncEventLog, store: AsyncJobStore, principal: Principal,
                      job: Job, req: ChatRequest) -> AsyncIterator[bytes]:
    """The job as the OpenAI chunk stream; usage in a last chunk when asked for."""
    created = unix(envelope(job)["created_at"])
    usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return sse_data(chat_chunk(job.id, job.model, created, delta, finish, with_usage=usage))

    finished = False
    sent_text = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for type_, data in follow(events=events, store=store, job_id=job.id):
            if type_ == "token" and data.get("text"):
                sent_text = True
                yield chunk({"content": data["text"]})
            elif type_ == "status" and data.get("restarted") and sent_text:
                # Text already sent cannot be taken back in this protocol.
                yield sse_data(error_body(
                    "provider_unavailable",
                    "the provider's stream broke and restarted; retry the request",
                    code="stream_restarted"))
                return
            elif type_ == "done":
                finished = True
                if data.get("status") != "succeeded":
                    _, err = job_failure(data)
                    yield sse_data(error_body(err["type"], err["message"], code=err["type"]))
                    return
                yield chunk({}, (data.get("output") or {}).get("finish_reason") or "stop")
                if usage:
                    yield sse_data(usage_chunk(job.id, job.model, created, data))
                yield sse_data("[DONE]")
                return
    finally:
        if not finished:
            await cancel_quietly(store=store, principal=principal, job_id=job.id)
