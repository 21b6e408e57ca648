"""A job's event log: one Redis stream per job, written by the job store and the
running job, read by every follower (SSE, chat completions, anything later).

Each entry has two fields: `type` (status | token | progress | error | done) and
`data` (JSON). The stream is capped in length and expires a while after `done`.

- `append()` is the one way an entry is written: it queues the commands on a
  pipeline, sync or asyncio alike, so every writer writes the same shape;
- `EventWriter` is a worker process's writer (thread-safe, tokens coalesced);
- `AsyncEventLog` is the API's: best-effort appends, and `follow()`, the one reader.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from common import jsontext
from common.constants import EVENTS_KEY

log = logging.getLogger(__name__)

EventItem = tuple[str, dict[str, Any]]

_QUIET_MAX_S = 8.0  # the longest an EventWriter drops events after failed writes


def events_key(job_id: str) -> str:
    return EVENTS_KEY.format(job_id=job_id)


def encode(type_: str, data: dict[str, Any]) -> dict[str, str]:
    return {"type": type_, "data": jsontext.dumps(data)}


def decode(fields: Mapping[Any, Any]) -> tuple[str, dict[str, Any]]:
    get: Callable[[Any], Any] = fields.get  # keys are bytes or str, by the client
    type_ = get(b"type") or get("type")
    data = get(b"data") or get("data")
    if isinstance(type_, bytes):
        type_ = type_.decode()
    return type_, jsontext.loads(data)


def append(pipe: Any, job_id: str, items: Iterable[EventItem], *, maxlen: int,
           final: bool = False, ttl_s: int = 0) -> int:
    """Queue the job's events on `pipe` (a sync or asyncio pipeline); `final` starts the
    stream's expiry. Returns how many replies the commands will add."""
    key = events_key(job_id)
    n = 0
    for type_, data in items:
        pipe.xadd(key, encode(type_, data), maxlen=maxlen, approximate=True)
        n += 1
    if final:
        pipe.expire(key, ttl_s)
        n += 1
    return n


@dataclass
class _Buffer:
    """A job's events waiting for its next write: deferred events, then its tokens
    since (joined into one token event)."""

    events: list[EventItem] = field(default_factory=list)
    first: int = 0  # the index of the first buffered token
    texts: list[str] = field(default_factory=list)
    attempt: int | None = None  # the attempt whose tokens these are

    def add_token(self, text: str, index: int, attempt: int | None = None) -> None:
        if not self.texts:
            self.first = index
            self.attempt = attempt
        self.texts.append(text)

    def add_event(self, item: EventItem) -> None:
        if self.texts:  # tokens buffered before it go first
            self.events.append(("token", self._joined()))
            self.texts = []
        self.events.append(item)

    def items(self) -> list[EventItem]:
        return self.events + ([("token", self._joined())] if self.texts else [])

    def _joined(self) -> dict[str, Any]:
        """Buffered tokens as one token event (`count` says how many it joins)."""
        return _token(self.first, self.texts, self.attempt)


def _token(first: int, texts: list[str], attempt: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"text": "".join(texts), "index": first}
    if len(texts) > 1:
        data["count"] = len(texts)
    if attempt is not None:
        data["attempt"] = attempt
    return data


class EventWriter:
    """Appends events for jobs of one worker process (thread-safe).

    Tokens are coalesced: a token is written at once when the job's last write is
    older than `coalesce_s`; otherwise it waits (at most `coalesce_s`) in a buffer
    that a flusher thread writes as one event. Other events flush the job's
    buffered tokens first, so the order is kept. `defer` puts an event in that
    buffer too (a job's `running` status: a job done within `coalesce_s` then
    writes all its events in one round trip, and a follower reads them in one).
    Event writes are best effort: the database is the truth, and a lost event never
    fails a job.

    After a write failed, the writer stays quiet for `quiet_s`, twice as long after
    each failure in a row up to `_QUIET_MAX_S`: events other than a job's last ones
    are dropped at once. A Redis cut off by a partition answers nothing, and each
    write would wait out the socket timeout, a job's every token (a 3 s echo job took
    48 s; 12 s with a fixed second of quiet). The last events (`done`) are always
    tried.
    """

    def __init__(self, client: redis.Redis, *, maxlen: int, ttl_s: int, coalesce_s: float = 0.01,
                 quiet_s: float = 1.0):
        self._redis = client
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._coalesce_s = coalesce_s
        self._quiet_s = quiet_s
        self._quiet_until = 0.0
        self._failures = 0  # failed writes in a row
        self._lock = threading.Lock()
        self._pending: dict[str, _Buffer] = {}
        self._last_write: dict[str, float] = {}
        self._job_locks: dict[str, threading.Lock] = {}
        self._wake = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="event-flusher", daemon=True)
        self._flusher.start()

    # Writing ---------------------------------------------------------------
    def token(self, job_id: str, text: str, index: int, attempt: int | None = None) -> None:
        """A token of the job's run; `attempt` marks it as that attempt's, so that
        readers drop the tokens of an attempt superseded while it still streamed
        (its worker cut off from the database by a partition)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_write.get(job_id, 0.0) >= self._coalesce_s:
                # Due: written now, after whatever waits (a deferred status).
                pending = self._pending.pop(job_id, None)
                items = pending.items() if pending else []
                items.append(("token", _token(index, [text], attempt)))
                self._last_write[job_id] = now
            else:
                self._pending.setdefault(job_id, _Buffer()).add_token(text, index, attempt)
                items = []
        if items:
            with self._writing(job_id):
                self._write(job_id, items)
        else:
            self._wake.set()

    def defer(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        """Append an event within `coalesce_s`: with the job's next write, or by the
        flusher thread."""
        with self._lock:
            self._pending.setdefault(job_id, _Buffer()).add_event((type_, data))
            self._last_write[job_id] = time.monotonic()
        self._wake.set()

    def emit(self, job_id: str, type_: str, data: dict[str, Any], *, final: bool = False,
             ttl_s: int | None = None) -> None:
        """Append an event; `final` starts the stream's expiry (`ttl_s` or the default)."""
        self.emit_many(job_id, [(type_, data)], final=final, ttl_s=ttl_s)

    def emit_many(self, job_id: str, events: list[EventItem], *, final: bool = False,
                  ttl_s: int | None = None) -> None:
        """Append the job's buffered events, then `events`, in one round trip (best
        effort: a Redis failure is logged)."""
        with self._writing(job_id, final=final):
            with self._lock:
                pending = self._pending.pop(job_id, None)
                if final:
                    self._last_write.pop(job_id, None)
                else:
                    self._last_write[job_id] = time.monotonic()
            items = (pending.items() if pending else []) + events
            self._write(job_id, items, final=final, ttl_s=ttl_s or self._ttl_s)

    def emit_jobs(self, jobs: list[tuple[str, list[EventItem], int]]) -> None:
        """The last events of many jobs, each (job id, events, seconds its stream is
        kept), in one round trip: a chunk's lines, which stream no tokens, so nothing
        is buffered for them."""
        if not jobs:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for job_id, items, ttl_s in jobs:
                append(pipe, job_id, items, maxlen=self._maxlen, final=True, ttl_s=ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("events of %d jobs not written: %s", len(jobs), exc)

    def flush(self, job_id: str) -> None:
        with self._writing(job_id):
            with self._lock:
                pending = self._pending.pop(job_id, None)
                if pending is None:
                    return
                self._last_write[job_id] = time.monotonic()
            self._write(job_id, pending.items())

    @contextmanager
    def _writing(self, job_id: str, final: bool = False) -> Iterator[None]:
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
    def _write(self, job_id: str, items: list[EventItem], *, final: bool = False,
               ttl_s: int = 0) -> None:
        """One round trip; while the writer is quiet, only a job's last events go."""
        if not final and self._quiet():
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            append(pipe, job_id, items, maxlen=self._maxlen, final=final, ttl_s=ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            self._failed(",".join(t for t, _ in items), job_id, exc)
        else:
            self._failures = 0

    def _quiet(self) -> bool:
        return time.monotonic() < self._quiet_until

    def _failed(self, types: str, job_id: str, exc: redis.RedisError) -> None:
        self._failures += 1
        quiet = min(self._quiet_s * 2 ** min(self._failures - 1, 10), _QUIET_MAX_S)
        self._quiet_until = time.monotonic() + quiet
        log.warning("events %s for job %s not written, and none but a job's last for "
                    "%.1f s: %s", types, job_id, quiet, exc)

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self._coalesce_s)
            for job_id in list(self._pending):
                self.flush(job_id)


# The API's side ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Event:
    id: str | None  # the stream entry id (None for a `done` built from the database)
    type: str
    data: dict[str, Any]


FinalLookup = Callable[[], Awaitable[dict[str, Any] | None]]


class AsyncEventLog:
    """The API's writer and reader of job event streams (redis.asyncio).

    Writes are best effort like EventWriter's: the database is the truth.
    """

    def __init__(self, client: aioredis.Redis, *, maxlen: int, ttl_s: int):
        self.redis = client
        self.maxlen = maxlen
        self.ttl_s = ttl_s

    async def append(self, job_id: str, items: list[EventItem], *, final: bool = False,
                     ttl_s: int | None = None) -> None:
        await self.append_many([(job_id, items)], final=final, ttl_s=ttl_s)

    async def append_many(self, jobs: Iterable[tuple[str, list[EventItem]]], *,
                          final: bool = False, ttl_s: int | None = None) -> None:
        """Events of many jobs in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        types: set[str] = set()
        for job_id, items in jobs:
            append(pipe, job_id, items, maxlen=self.maxlen, final=final,
                   ttl_s=ttl_s or self.ttl_s)
            types.update(t for t, _ in items)
        try:
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("events %s not written: %s", ",".join(sorted(types)), exc)

    async def exists(self, job_id: str) -> bool:
        try:
            return bool(await self.redis.exists(events_key(job_id)))
        except (redis.RedisError, OSError):
            return False

    async def follow(self, job_id: str, *, lookup: FinalLookup, after: str | None = None,
                     final: dict[str, Any] | None = None, block_ms: int = 5000,
                     grace_ms: int = 1000, count: int = 1000) -> AsyncIterator[list[Event]]:
        """The job's events from `after` (a stream id), live, until `done`.

        Yields the events of each read together (one write for a client); an empty list
        when a whole block passed quietly or Redis is away (a keep-alive is due).
        `final` is the job's envelope when the caller already saw it finished.

        While events flow only Redis is read. `lookup()` (the job's envelope from the
        database once it is over, else None) is asked when the stream stays quiet or
        Redis fails: a job that ended without its own `done` (its worker died between
        the two writes, the stream expired, Redis was down) still ends with one. The
        worker writes the database first and `done` a moment later, so a finished
        job's stream gets `grace_ms` to deliver its own.

        Tokens of an attempt older than the newest `running` one are left out: a
        worker cut off from the database goes on streaming a run that another
        attempt took over (its end is refused by the attempt fence).
        """
        key = events_key(job_id)
        cursor = _stream_id(after)
        attempt = 0  # the newest attempt seen
        while True:
            try:
                block = block_ms if final is None else (
                    grace_ms if await self.redis.exists(key) else None)
                got = await self.redis.xread({key: cursor}, count=count, block=block)
            except (redis.RedisError, OSError) as exc:
                log.warning("event stream of job %s interrupted: %s", job_id, exc)
                final = final or await lookup()
                if final is not None:
                    yield [Event(None, "done", final)]
                    return
                yield []
                await asyncio.sleep(1.0)
                continue
            chunk: list[Event] = []
            # The client speaks RESP2: [[key, [(entry id, fields), ...]]].
            entries = cast("list[list[Any]]", got)[0][1] if got else ()
            for entry_id, fields in entries:
                cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                type_, data = decode(fields)
                if type_ == "status" and data.get("status") == "running":
                    attempt = max(attempt, data.get("attempt") or 0)
                elif type_ == "token":  # a reader resumed after the `running` learns here
                    if (data.get("attempt") or attempt) < attempt:
                        continue
                    attempt = data.get("attempt") or attempt
                chunk.append(Event(cursor, type_, data))
                if type_ == "done":
                    yield chunk
                    return
            if chunk:
                yield chunk
            if entries:
                continue
            if final is not None:  # over, and its stream has nothing more
                yield [Event(None, "done", final)]
                return
            final = await lookup()
            if final is None:
                yield []


def _stream_id(last_id: str | None) -> str:
    """A client's Last-Event-ID as a stream id to read after (the start if unusable)."""
    if not last_id:
        return "0-0"
    ms, _, seq = last_id.strip().partition("-")
    if ms.isdigit() and (seq.isdigit() or not seq):
        return f"{ms}-{seq or 0}"
    return "0-0"
