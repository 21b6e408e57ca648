"""Native job routes: /v1/jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.deps import (
    AutoSessionDep,
    EventsDep,
    Principal,
    PrincipalDep,
    ProducerDep,
    QueuedCountsDep,
    RecentJobsDep,
    SettingsDep,
    ShutdownDep,
    StoreDep,
    StreamsDep,
)
from api.limits import StreamSlots
from api.metrics import JOBS_SUBMITTED
from api.responses import SSE_EVENT, QueuePosition, errors
from api.services import jobs as svc
from api.shutdown import ShutdownNotice
from api.sse import EventStreamResponse, job_events, sse, until_stopping
from common.errors import RateLimited
from common.jobs import TERMINAL, envelope
from common.schemas import JobCreate, JobEnvelope, JobList
from common.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


_EVENT_STREAM = {"text/event-stream": {"schema": SSE_EVENT}}


_PREFER_WAIT = (
    "`wait=N` (N seconds, at most 60; a bare `wait` is 60): answer when the job ends if "
    "it ends within N seconds (200, the finished job), else after N seconds with the job "
    "as it is then (202, queued or running), as Replicate's predictions do. The answer "
    "carries `Preference-Applied: wait=N`. Other preferences are ignored (RFC 7240), and "
    "so is `wait` with `Accept: text/event-stream`."
)


@router.post("", status_code=202, response_model=JobEnvelope, responses={
    200: {"model": JobEnvelope,
          "description": "With `Prefer: wait=N`: the job ended within N seconds "
                         "(succeeded, failed, cancelled or expired)."},
    202: {"content": _EVENT_STREAM,
          "description": "The job's envelope (queued; with `Prefer: wait=N`, as it is after "
                         "N seconds); with `Accept: text/event-stream`, its events "
                         "instead (as GET /v1/jobs/{id}/events), the job's URL in Location."},
    **errors(409, 413),
})
async def submit_job(
    job_in: JobCreate, request: Request, session: AutoSessionDep, principal: PrincipalDep,
    settings: SettingsDep, producer: ProducerDep, queued_counts: QueuedCountsDep,
    streams: StreamsDep, events: EventsDep, store: StoreDep, shutdown: ShutdownDep,
    recent: RecentJobsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                  max_length=255)] = None,
    prefer: Annotated[str | None, Header(alias="Prefer", max_length=200,
                                         description=_PREFER_WAIT)] = None,
) -> Response:
    follow = "text/event-stream" in request.headers.get("accept", "")
    if follow:  # submit and follow in one request: the stream slot first, so a 429 adds nothing
        _take_stream_slot(streams, principal)
    try:
        job, created = await svc.create_job(
            session=session, producer=producer, settings=settings, queued_counts=queued_counts,
            principal=principal, job_in=job_in, idempotency_key=idempotency_key,
            recent=recent,
        )
    except BaseException:
        if follow:
            streams.release(principal.key_id)
        raise
    if created:
        JOBS_SUBMITTED.labels(job.kind, job.model, job.priority).inc()
    headers = {"Location": f"/v1/jobs/{job.id}"}
    wait_s = None if follow else svc.prefer_wait(prefer)
    if wait_s is not None:
        await session.close()  # no database connection held while the job runs
        env = await svc.wait_for_end(events=events, store=store, principal=principal, job=job,
                                     wait_s=wait_s)
        headers["Preference-Applied"] = f"wait={wait_s}"
        return JSONResponse(env, status_code=200 if env["status"] in TERMINAL else 202,
                            headers=headers)
    if not follow:
        return JSONResponse(envelope(job), status_code=202, headers=headers)
    await session.close()
    final = envelope(job) if job.status in TERMINAL else None  # an idempotent replay
    # The stream opens with the job's id: a status event with no event id (it is not
    # on the job's stream, so Last-Event-ID never points at it).
    opening = sse({"status": job.status, "job_id": job.id}, "status")
    stream = job_events(events=events, store=store, job_id=job.id, last_id=None, final=final,
                        opening=opening)
    return _event_stream(stream, streams, principal, shutdown, settings, status_code=202,
                         headers=headers)


_SEARCH = (
    "Text to find (case-insensitive) in a job's id (a response's `resp_` id finds its "
    "job), its batch line's `custom_id`, or its input (prompt, messages, texts), among "
    f"the key's newest {svc.SEARCH_WINDOW} jobs; with the other filters, newest first."
)


@router.get("", response_model=JobList)
async def list_jobs(
    session: AutoSessionDep, principal: PrincipalDep,
    status: Annotated[str | None, Query(pattern=r"^[a-z,]+$")] = None,
    kind: Literal["generate", "embed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    priority: Literal["interactive", "batch"] | None = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=200, description=_SEARCH)] = None,
) -> JSONResponse:
    return JSONResponse(await svc.list_jobs(
        session=session, principal=principal, status=status, kind=kind, limit=limit,
        after=after, model=model, priority=priority, batch_id=batch_id, q=q))


@router.get("/{job_id}", response_model=JobEnvelope, responses=errors(404))
async def get_job(job_id: str, store: StoreDep, principal: PrincipalDep) -> JSONResponse:
    # A response object skips re-validating the envelope: the model only documents it.
    return JSONResponse(envelope(await svc.get_job(store=store, principal=principal,
                                                   job_id=job_id)))


@router.get("/{job_id}/position", response_model=QueuePosition, responses=errors(404))
async def job_position(job_id: str, session: AutoSessionDep, store: StoreDep,
                       principal: PrincipalDep) -> JSONResponse:
    """A queued job's place on its queue (`ahead`: queued jobs before it); null once
    it left the queue."""
    return JSONResponse(await svc.queue_position(session=session, store=store,
                                                 principal=principal, job_id=job_id))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobEnvelope,
             responses=errors(404, 409))
async def cancel_job(job_id: str, store: StoreDep, principal: PrincipalDep) -> JSONResponse:
    job = await svc.cancel_job(store=store, principal=principal, job_id=job_id)
    return JSONResponse(envelope(job), status_code=202)


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={
    200: {"content": _EVENT_STREAM,
          "description": "The job's events, ending with `done` (the envelope)."},
    **errors(404),
})
async def job_events_route(
    job_id: str, request: Request, principal: PrincipalDep, store: StoreDep,
    events: EventsDep, streams: StreamsDep, shutdown: ShutdownDep, settings: SettingsDep,
    recent: RecentJobsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    final = await svc.final_if_ended(store=store, recent=recent, principal=principal,
                                     job_id=job_id)
    _take_stream_slot(streams, principal)
    resume = last_event_id or request.query_params.get("last_event_id")
    stream = job_events(events=events, store=store, job_id=job_id, last_id=resume, final=final)
    return _event_stream(stream, streams, principal, shutdown, settings)


def _take_stream_slot(streams: StreamSlots, principal: Principal) -> None:
    if not streams.acquire(principal.key_id):
        raise RateLimited(f"this key has {streams.limit} event streams open "
                          "(MONKEY_MAX_STREAMS_PER_KEY); close one or poll GET /v1/jobs/{id}",
                          retry_after=1)


def _event_stream(chunks: AsyncIterator[bytes], streams: StreamSlots, principal: Principal,
                  shutdown: ShutdownNotice, settings: Settings, **kw) -> StreamingResponse:
    """The response for a taken stream slot; the slot is given back when it ends, and
    it ends early, with a reconnect hint, when the server shuts down."""
    kw["headers"] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                     **kw.get("headers", {})}
    chunks = until_stopping(chunks, shutdown.stopping)
    return EventStreamResponse(_released(chunks, streams, principal.key_id),
                               send_timeout_s=settings.sse_send_timeout_s, **kw)


async def _released(chunks: AsyncIterator[bytes], streams: StreamSlots, key_id: str
                    ) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        streams.release(key_id)
