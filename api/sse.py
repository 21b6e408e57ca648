"""GET /v1/jobs/{id}/events: replay the job's Redis stream from Last-Event-ID, then
follow it live until `done`. A finished job whose stream is gone (expired, or never
written because Redis was down) still gets its `done`, built from the database."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator

from common.events import AsyncEventLog
from common.store import AsyncJobStore

_BLOCK_MS = 5000
_DONE_GRACE_MS = 1000


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
