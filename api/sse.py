"""GET /v1/jobs/{id}/events: replay the job's Redis stream from Last-Event-ID, then
follow it live until `done`. A finished job whose stream is gone (expired, or never
written because Redis was down) still gets its `done`, built from the database."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from sqlalchemy import select

from api.state import AppState
from common.db import Job
from common.events import decode, events_key
from common.jobs import JOB_COLUMNS, TERMINAL, envelope

log = logging.getLogger("monkey.api")

_BLOCK_MS = 5000
_DONE_GRACE_MS = 1000


def sse(data: dict, event: str, id_: str | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _normalise(last_id: str | None) -> str:
    if not last_id:
        return "0-0"
    ms, _, seq = last_id.strip().partition("-")
    if ms.isdigit() and (seq.isdigit() or not seq):
        return f"{ms}-{seq or 0}"
    return "0-0"


async def final_envelope(state: AppState, job_id: str) -> dict | None:
    """The job's envelope from the database once it is over, else None."""
    async with state.auto_sessions() as session:
        job = (await session.execute(select(*JOB_COLUMNS).where(Job.id == job_id))).first()
        return envelope(job) if job is not None and job.status in TERMINAL else None


async def job_events(state: AppState, job_id: str, last_id: str | None,
                     final: dict | None = None, opening: bytes = b"") -> AsyncIterator[bytes]:
    """`final` is the job's envelope when the caller already saw it finished; None when
    it saw the job still going. `opening` goes out first, with the reconnect delay.

    While events flow, only Redis is read. The database is asked only when the stream
    stays quiet for a whole block (or Redis fails): a job that ended without its own
    `done` event (its worker died between the two writes) still gets one, from there.
    """
    key = events_key(job_id)
    cursor = _normalise(last_id)
    yield opening + b"retry: 1000\n\n"
    while True:
        try:
            block = _BLOCK_MS if final is None else await _grace_ms(state, key)
            entries = await state.redis.xread({key: cursor}, count=1000, block=block)
        except (RedisError, OSError) as exc:
            log.warning("event stream of job %s interrupted: %s", job_id, exc)
            final = final or await final_envelope(state, job_id)
            if final is not None:
                yield sse(final, "done")
                return
            yield b": waiting for redis\n\n"
            await asyncio.sleep(1.0)
            continue
        # One write per read: the events that arrived together go out together.
        chunk: list[bytes] = []
        for entry_id, fields in entries[0][1] if entries else ():
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            type_, data = decode(fields)
            chunk.append(sse(data, type_, cursor))
            if type_ == "done":
                yield b"".join(chunk)
                return
        if chunk:
            yield b"".join(chunk)
            continue
        if final is not None:  # over, and its stream has nothing more: end from the database
            yield sse(final, "done")
            return
        final = await final_envelope(state, job_id)
        if final is None:
            yield b": keep-alive\n\n"


async def _grace_ms(state: AppState, key: str) -> int | None:
    """How long to wait for a finished job's own `done`: the worker writes the database
    first and the event a moment later. No wait when the stream is gone altogether."""
    return _DONE_GRACE_MS if await state.redis.exists(key) else None
