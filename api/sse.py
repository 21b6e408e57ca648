"""GET /v1/jobs/{id}/events: replay the job's Redis stream from Last-Event-ID, then
follow it live until `done`. A finished job whose stream is gone (expired, or never
written because Redis was down) still gets its `done`, built from the database.

When the API shuts down (api/shutdown.py) a stream ends between two events with a
reconnect hint: a short `retry:` and a comment. The client (EventSource, monkey's
client) reconnects with the last id it saw and, behind a load balancer, lands on
another instance, which resumes the stream where this one left it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator

from common.events import AsyncEventLog
from common.store import AsyncJobStore

_BLOCK_MS = 5000
_DONE_GRACE_MS = 1000
RECONNECT = b"retry: 250\n: the server is shutting down; reconnect with Last-Event-ID\n\n"


def sse(data: dict, event: str, id_: str | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def job_events(*, events: AsyncEventLog, store: AsyncJobStore, job_id: str,
                     last_id: str | None, final: dict | None = None, opening: bytes = b""
                     ) -> AsyncIterator[bytes]:
    """`final` is the job's envelope when the caller already saw it finished; None when
    it saw the job still going. `opening` goes out first, with the reconnect delay.
    One write per read: the events that arrived together go out together."""
    yield opening + b"retry: 1000\n\n"
    async for arrived in events.follow(
            job_id, after=last_id, final=final, block_ms=_BLOCK_MS, grace_ms=_DONE_GRACE_MS,
            lookup=functools.partial(store.final_envelope, job_id)):
        if arrived:
            yield b"".join(sse(e.data, e.type, e.id) for e in arrived)
        else:
            yield b": keep-alive\n\n"


async def until_stopping(chunks: AsyncIterator[bytes], stopping: asyncio.Event,
                         last: bytes = RECONNECT) -> AsyncIterator[bytes]:
    """`chunks` until `stopping` is set, then `last` instead of the rest. A chunk is
    one or more whole events, so the stream is cut between events, never inside one."""
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(chunks))
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                yield last
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        stop.cancel()
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
