"""GET /v1/jobs/{id}/events: replay the job's Redis stream from Last-Event-ID, then
follow it live until `done`. A finished job whose stream is gone (expired, or never
written because Redis was down) still gets its `done`, built from the database.

A client that stops reading holds at most what the server's socket buffers take:
uvicorn stops the stream's writes when its transport is full (flow control), so the
stream waits instead of growing. `EventStreamResponse` closes a stream whose client
read nothing for MONKEY_SSE_SEND_TIMEOUT_S, giving back its slot in the key's stream
limit; other streams never wait on it.

When the API shuts down (api/shutdown.py) a stream ends between two events with a
reconnect hint: a short `retry:` and a comment. The client (EventSource, monkey's
client) reconnects with the last id it saw and, behind a load balancer, lands on
another instance, which resumes the stream where this one left it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

from common import jsontext
from common.events import AsyncEventLog
from common.store import AsyncJobStore

log = logging.getLogger("monkey.sse")

_BLOCK_MS = 5000
_DONE_GRACE_MS = 1000
_SLICE = 64 * 1024
RECONNECT = b"retry: 250\n: the server is shutting down; reconnect with Last-Event-ID\n\n"


def sse(data: dict, event: str, id_: str | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ else ""
    return f"{head}event: {event}\ndata: {jsontext.dumps(data)}\n\n".encode()


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


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response whose every write must go out within
    `send_timeout_s`: a client that stopped reading (its socket full) is cut off
    instead of holding its stream, its slot and its buffers for ever."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout_s: float,
                 **kw: Any) -> None:
        super().__init__(content, **kw)
        self.send_timeout_s = send_timeout_s

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for part in self.body_iterator:
                chunk = part.encode() if isinstance(part, str) else bytes(part)
                # In slices: uvicorn's transport takes a whole write into its buffer
                # before it pauses, so one large `done` would sit there in full.
                for i in range(0, len(chunk), _SLICE):
                    await self._send(send, chunk[i:i + _SLICE], more=True)
            await self._send(send, b"", more=False)
        except TimeoutError:
            # Left unfinished: the server closes the connection, the client (if it
            # ever reads again) reconnects with Last-Event-ID.
            log.warning("event stream closed: its client read nothing for %.0f s",
                        self.send_timeout_s)
        finally:
            if isinstance(self.body_iterator, AsyncGenerator):
                await self.body_iterator.aclose()

    async def _send(self, send: Send, body: bytes, *, more: bool) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps each send in a
        # task of its own.
        async with asyncio.timeout(self.send_timeout_s or None):
            await send({"type": "http.response.body", "body": body, "more_body": more})


async def until_stopping(chunks: AsyncIterator[bytes], stopping: asyncio.Event,
                         last: bytes = RECONNECT) -> AsyncIterator[bytes]:
    """`chunks` until `stopping` is set, then `last` instead of the rest. A chunk is
    one or more whole events, so the stream is cut between events, never inside one."""
    stop = asyncio.ensure_future(stopping.wait())
    step: asyncio.Future[bytes] | None = None
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
        # The client left (this generator is cancelled) while `step` runs the source: the
        # source must stop inside that task (aclose() on a running generator raises, and
        # its own cleanup, such as cancelling the job of a chat stream, would never run).
        # Shielded: the request's cancel scope would cancel each await here at once.
        with anyio.CancelScope(shield=True):
            if step is not None and not step.done():
                step.cancel()
                await asyncio.wait({step})
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
