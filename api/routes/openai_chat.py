"""OpenAI-compatible inference: POST /v1/chat/completions and POST /v1/embeddings.

Each request is a job on the same queue as native jobs (priority `interactive`); the
`X-Monkey-Job-Id` header names it, so GET /v1/jobs/{id} shows its metrics.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import (
    AutoSessionDep,
    EventsDep,
    PrincipalDep,
    ProducerDep,
    QueuedCountsDep,
    SettingsDep,
    ShutdownDep,
    StoreDep,
)
from api.errors import error_response
from api.responses import SSE_EVENT, ChatCompletion, EmbeddingList, errors, json_body
from api.services import completions
from api.services.openai_shapes import (
    ChatRequest,
    EmbeddingRequest,
    chat_completion,
    embedding_response,
    job_failure,
    parse_request,
)
from api.sse import EventStreamResponse, until_stopping
from common.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["openai"])


async def _body(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


def _answer(env: dict | None, shape) -> JSONResponse:
    if env is None:  # the client hung up; nobody reads this
        return error_response(499, "cancelled", "the client closed the request")
    headers = {"X-Monkey-Job-Id": env["id"]}
    if env["status"] != "succeeded":
        status, err = job_failure(env)
        retry = 1.0 if status in (429, 503) else None
        resp = error_response(status, err["type"], err["message"], retry_after=retry,
                              code=err["type"])
        resp.headers.update(headers)
        return resp
    return JSONResponse(shape(env), headers=headers)


# A job that did not succeed answers as OpenAI would (openai_shapes.job_failure).
_JOB_FAILURES = errors(400, 413, 500, 502, 503, 504)


@router.post("/chat/completions", response_model=None, openapi_extra=json_body(ChatRequest),
             responses={200: {"model": ChatCompletion, "description": "The completion; with "
                              "`stream`, its chunks as server-sent events.",
                              "content": {"text/event-stream": {"schema": SSE_EVENT}}},
                        **_JOB_FAILURES})
async def chat_completions(
    request: Request, principal: PrincipalDep, session: AutoSessionDep, settings: SettingsDep,
    producer: ProducerDep, queued_counts: QueuedCountsDep, events: EventsDep, store: StoreDep,
    shutdown: ShutdownDep,
) -> StreamingResponse | JSONResponse:
    req, job_in = parse_request("/v1/chat/completions", await _body(request))
    job = await completions.submit(session=session, producer=producer, settings=settings,
                                   queued_counts=queued_counts, principal=principal,
                                   job_in=job_in)
    await session.close()  # no database connection held while the job runs
    if isinstance(req, ChatRequest) and req.stream:
        chunks = completions.chat_stream(events=events, store=store, principal=principal,
                                         job=job, req=req)
        return EventStreamResponse(
            until_stopping(chunks, shutdown.stopping, last=completions.SHUTDOWN_CHUNK),
            send_timeout_s=settings.sse_send_timeout_s,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                     "X-Monkey-Job-Id": job.id},
        )
    env = await completions.wait_done(events=events, store=store, principal=principal,
                                      job_id=job.id, is_disconnected=request.is_disconnected)
    return _answer(env, chat_completion)


@router.post("/embeddings", response_model=None, openapi_extra=json_body(EmbeddingRequest),
             responses={200: {"model": EmbeddingList}, **_JOB_FAILURES})
async def embeddings(
    request: Request, principal: PrincipalDep, session: AutoSessionDep, settings: SettingsDep,
    producer: ProducerDep, queued_counts: QueuedCountsDep, events: EventsDep, store: StoreDep,
) -> JSONResponse:
    _, job_in = parse_request("/v1/embeddings", await _body(request))
    job = await completions.submit(session=session, producer=producer, settings=settings,
                                   queued_counts=queued_counts, principal=principal,
                                   job_in=job_in)
    await session.close()  # no database connection held while the job runs
    env = await completions.wait_done(events=events, store=store, principal=principal,
                                      job_id=job.id, is_disconnected=request.is_disconnected)
    return _answer(env, embedding_response)
