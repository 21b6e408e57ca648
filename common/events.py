"""A job's events on a Redis stream: written by workers (and the API's own
transitions), replayed and followed by the SSE endpoint.

Each entry has two fields: `type` (status | token | progress | error | done) and
`data` (JSON). The stream is capped in length and expires a while after `done`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager

import redis

from common.constants import EVENTS_KEY

log = logging.getLogger(__name__)

EVENT_TYPES = ("status", "token", "progress", "error", "done")


def events_key(job_id: str) -> str:
    return EVENTS_KEY.format(job_id=job_id)


def encode(type_: str, data: dict) -> dict[str, str]:
    return {"type": type_, "data": json.dumps(data, separators=(",", ":"))}


def decode(fields: dict) -> tuple[str, dict]:
    get = fields.get
    type_ = get(b"type") or get("type")
    data = get(b"data") or get("data")
    if isinstance(type_, bytes):
        type_ = type_.decode()
    return type_, json.loads(data)


async def emit_async(client, job_id: str, type_: str, data: dict, *, maxlen: int, ttl_s: int,
                     final: bool = False) -> None:
    """One event from the API's side (redis.asyncio client); best effort like EventWriter."""
    key = events_key(job_id)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.xadd(key, encode(type_, data), maxlen=maxlen, approximate=True)
        if final:
            pipe.expire(key, ttl_s)
        await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("event %s for job %s not written: %s", type_, job_id, exc)


class EventWriter:
    """Appends events for jobs of one worker process (thread-safe).

    Tokens are coalesced: a token is written at once when the job's last write is
    older than `coalesce_s`; otherwise it waits (at most `coalesce_s`) in a buffer
    that a flusher thread writes as one event. Other events flush the job's
    buffered tokens first, so the order is kept. Event writes are best effort:
    the database is the truth, and a lost event never fails a job.
    """

    def __init__(self, client: redis.Redis, *, maxlen: int, ttl_s: int, coalesce_s: float = 0.01):
        self._redis = client
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._coalesce_s = coalesce_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, list[str]]] = {}  # job -> (first index, texts)
        self._last_write: dict[str, float] = {}
        self._job_locks: dict[str, threading.Lock] = {}
        self._wake = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="event-flusher", daemon=True)
        self._flusher.start()

    # Writing ---------------------------------------------------------------
    def token(self, job_id: str, text: str, index: int) -> None:
        now = time.monotonic()
        with self._lock:
            pending = self._pending.get(job_id)
            if pending is None and now - self._last_write.get(job_id, 0.0) >= self._coalesce_s:
                self._last_write[job_id] = now
                write_now = True
            else:
                if pending is None:
                    self._pending[job_id] = (index, [text])
                else:
                    pending[1].append(text)
                write_now = False
        if write_now:
            with self._writing(job_id):
                self._xadd(job_id, "token", {"text": text, "index": index})
        else:
            self._wake.set()

    def emit(self, job_id: str, type_: str, data: dict, *, final: bool = False,
             ttl_s: int | None = None) -> None:
        """Append an event; `final` starts the stream's expiry (`ttl_s` or the default)."""
        self.emit_many(job_id, [(type_, data)], final=final, ttl_s=ttl_s)

    def emit_many(self, job_id: str, events: list[tuple[str, dict]], *, final: bool = False,
                  ttl_s: int | None = None, extra=None) -> list | None:
        """Append the job's buffered tokens, then `events`, in one round trip.

        `extra(pipe)` may queue more commands on the same pipeline; their replies are
        returned (None when Redis failed: events are best effort).
        """
        with self._writing(job_id, final=final):
            with self._lock:
                pending = self._pending.pop(job_id, None)
                if final:
                    self._last_write.pop(job_id, None)
                else:
                    self._last_write[job_id] = time.monotonic()
            items = [("token", _joined(pending))] if pending else []
            items += events
            key = events_key(job_id)
            try:
                pipe = self._redis.pipeline(transaction=False)
                for type_, data in items:
                    pipe.xadd(key, encode(type_, data), maxlen=self._maxlen, approximate=True)
                if final:
                    pipe.expire(key, ttl_s or self._ttl_s)
                skip = len(items) + int(final)
                if extra is not None:
                    extra(pipe)
                return pipe.execute()[skip:]
            except redis.RedisError as exc:
                log.warning("events %s for job %s not written: %s",
                            ",".join(t for t, _ in items), job_id, exc)
                return None

    def flush(self, job_id: str) -> None:
        with self._writing(job_id):
            with self._lock:
                pending = self._pending.pop(job_id, None)
                if pending is None:
                    return
                self._last_write[job_id] = time.monotonic()
            self._xadd(job_id, "token", _joined(pending))

    @contextmanager
    def _writing(self, job_id: str, final: bool = False):
        """One writer per job at a time, from taking its buffered tokens until they are
        on the stream: the flusher thread and the job's own thread must not overtake
        each other (a `done` written before the last tokens would end readers early)."""
        with self._lock:
            lock = self._job_locks.setdefault(job_id, threading.Lock())
        with lock:
            yield
        with self._lock:  # a job that ended (or never wrote) needs no lock any more
            if final or (job_id not in self._last_write and job_id not in self._pending):
                self._job_locks.pop(job_id, None)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        for job_id in list(self._pending):
            self.flush(job_id)

    # Internals -------------------------------------------------------------
    def _xadd(self, job_id: str, type_: str, data: dict) -> None:
        try:
            self._redis.xadd(events_key(job_id), encode(type_, data), maxlen=self._maxlen,
                             approximate=True)
        except redis.RedisError as exc:
            log.warning("event %s for job %s not written: %s", type_, job_id, exc)

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self._coalesce_s)
            for job_id in list(self._pending):
                self.flush(job_id)


def _joined(pending: tuple[int, list[str]]) -> dict:
    """Buffered tokens as one token event (`count` says how many it joins)."""
    first, texts = pending
    data = {"text": "".join(texts), "index": first}
    if len(texts) > 1:
        data["count"] = len(texts)
    return data
