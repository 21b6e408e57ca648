"""OpenAI's Responses API: /v1/responses. Each response is a job on the same queue as
native jobs (`resp_X` is job `job_X`; the `X-Monkey-Job-Id` header names it).

`background=true` answers at once and the job runs on; `stream=true` sends the typed
events, and `GET /v1/responses/{id}?stream=true&starting_after=N` resumes them from
the job's event log on any API process. A foreground request whose client hangs up
cancels its job; a background one never does. When the API shuts down a stream ends
between events with a reconnect hint (api/sse.py), as job event streams do: the SSE
id is the sequence number, so Last-Event-ID resumes it on another instance.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.deps import (
    EventsDep,
    PrincipalDep,
    ProducerDep,
    QueuedCountsDep,
    SessionDep,
    SettingsDep,
    ShutdownDep,
    StoreDep,
    StreamsDep,
)
from api.errors import error_response
from api.responses import SSE_EVENT, errors, json_body
from api.routes.jobs import _event_stream, _take_stream_slot
from api.routes.openai_chat import _body
from api.services import completions
from api.services import responses as svc
from api.services.responses_shapes import ResponseRequest, parse_response_request, response_object
from common.jobs import envelope

router = APIRouter(prefix="/v1/responses", tags=["openai"])


class _Open(BaseModel):
    # The document names the fields clients rely on; the full shape is OpenAI's
    # `Response` (tests/api/openai_schema validates every answer against it).
    model_config = ConfigDict(extra="allow")


class ResponseObject(_Open):
    id: str
    object: Literal["response"]
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
    created_at: int
    model: str
    output: list[dict[str, Any]]
    error: dict[str, Any] | None
    metadata: dict[str, str]


class ResponseDeleted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    object: Literal["response"]
    deleted: Literal[True]


class InputItemList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object: Literal["list"]
    data: list[dict[str, Any]]
    has_more: bool
    first_id: str
    last_id: str


_STREAM = {"text/event-stream": {"schema": SSE_EVENT}}


@router.post("", response_model=ResponseObject, openapi_extra=json_body(ResponseRequest),
             responses={200: {"description": "The response; with `stream`, its events.",
                              "content": _STREAM}, **errors(404, 413)})
async def create_response(
    request: Request, principal: PrincipalDep, session: SessionDep, settings: SettingsDep,
    producer: ProducerDep, queued_counts: QueuedCountsDep, events: EventsDep, store: StoreDep,
    streams: StreamsDep, shutdown: ShutdownDep,
) -> Any:
    req = parse_response_request(await _body(request))
    if req.stream:
        _take_stream_slot(streams, principal)
    try:
        job, row = await svc.create(session=session, producer=producer, settings=settings,
                                    queued_counts=queued_counts, principal=principal, req=req)
    except BaseException:
        if req.stream:
            streams.release(principal.key_id)
        raise
    await session.close()  # no database connection held while the job runs
    headers = {"X-Monkey-Job-Id": job.id}
    env = envelope(job)
    if req.stream:
        chunks = svc.stream(events=events, store=store, principal=principal, job=env, row=row,
                            cancel_on_hangup=not req.background)
        return _event_stream(chunks, streams, principal, shutdown, settings, headers=headers)
    if req.background:
        return JSONResponse(response_object(env, row), headers=headers)
    final = await completions.wait_done(events=events, store=store, principal=principal,
                                        job_id=job.id, is_disconnected=request.is_disconnected)
    if final is None:  # the client hung up; nobody reads this
        return error_response(499, "cancelled", "the client closed the request")
    return JSONResponse(response_object(final, row), headers=headers)


@router.get("/{response_id}", response_model=ResponseObject,
            responses={200: {"description": "The response; with `stream=true`, its events "
                             "after `starting_after`.", "content": _STREAM}, **errors(404)})
async def get_response(
    response_id: str, principal: PrincipalDep, session: SessionDep, store: StoreDep,
    events: EventsDep, streams: StreamsDep, shutdown: ShutdownDep, settings: SettingsDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1, le=10**9)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> Any:
    env, row = await svc.lookup(session=session, store=store, principal=principal,
                                resp_id=response_id)
    await session.close()
    headers = {"X-Monkey-Job-Id": row.job_id}
    if not stream:
        return JSONResponse(response_object(env, row), headers=headers)
    after = starting_after if starting_after is not None else _last_seq(last_event_id)
    _take_stream_slot(streams, principal)
    chunks = svc.stream(events=events, store=store, principal=principal, job=env, row=row,
                        after=after)
    return _event_stream(chunks, streams, principal, shutdown, settings, headers=headers)


def _last_seq(header: str | None) -> int:
    return int(header) if header and header.strip().isdigit() else -1


@router.post("/{response_id}/cancel", response_model=ResponseObject,
             responses=errors(404, 409))
async def cancel_response(response_id: str, principal: PrincipalDep, session: SessionDep,
                          store: StoreDep, events: EventsDep) -> JSONResponse:
    return JSONResponse(await svc.cancel(session=session, store=store, events=events,
                                         principal=principal, resp_id=response_id))


@router.delete("/{response_id}", response_model=ResponseDeleted, responses=errors(404))
async def delete_response(response_id: str, principal: PrincipalDep, session: SessionDep,
                          store: StoreDep) -> JSONResponse:
    return JSONResponse(await svc.delete(session=session, store=store, principal=principal,
                                         resp_id=response_id))


@router.get("/{response_id}/input_items", response_model=InputItemList, responses=errors(404))
async def list_input_items(
    response_id: str, principal: PrincipalDep, session: SessionDep, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=80)] = None,
) -> JSONResponse:
    return JSONResponse(await svc.input_items(session=session, store=store, principal=principal,
                                              resp_id=response_id, limit=limit, order=order,
                                              after=after))
