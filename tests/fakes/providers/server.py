"""A real HTTP/1.1 server on 127.0.0.1 that plays one provider, scripted per test.

It runs an asyncio loop in a background thread, so the SDKs under test reach it
over real sockets: keep-alive, chunked streams, Retry-After headers, a connection
cut in the middle of a stream, and a client that hangs up (seen at once, because
the server keeps reading the connection while it streams).

    with FakeProviderServer("openai") as server:
        server.script(error(429, retry_after=1), ok(tokens=5))
        ... point the SDK at server.base_url ...
        first, second = server.wait_requests(2)
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.providers.protocols import PROTOCOLS, Protocol, reason_phrase


@dataclass(frozen=True)
class Behaviour:
    """One scripted reply."""

    status: int = 200
    #: text deltas to stream (see protocols.token_text)
    tokens: int = 5
    #: seconds before each delta
    delay: float = 0.0
    #: seconds before the status line ("slow start")
    start_delay: float = 0.0
    #: close the connection after this many deltas, without ending the stream
    cut_after: int | None = None
    #: after this many deltas, send the provider's in-stream error event and end there
    error_after: int | None = None
    #: the status that in-stream error stands for
    error_status: int = 500
    finish: str = "stop"
    #: whether the stream reports usage
    usage: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    #: an error's message; "{key}" becomes the API key the request carried
    message: str | None = None


def ok(tokens: int = 5, delay: float = 0.0, **kw) -> Behaviour:
    return Behaviour(tokens=tokens, delay=delay, **kw)


def error(status: int, *, retry_after: str | float | None = None,
          retry_after_ms: float | None = None, message: str | None = None) -> Behaviour:
    headers = []
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", str(retry_after_ms)))
    return Behaviour(status=status, headers=tuple(headers), message=message)


def cut(after: int, tokens: int = 5, delay: float = 0.0) -> Behaviour:
    return Behaviour(tokens=tokens, delay=delay, cut_after=after)


def stream_error(after: int, status: int = 500, tokens: int = 5) -> Behaviour:
    """A stream that starts well (200) and then reports an error inside itself."""
    return Behaviour(tokens=tokens, error_after=after, error_status=status)


def slow_start(seconds: float, tokens: int = 5, delay: float = 0.0) -> Behaviour:
    return Behaviour(tokens=tokens, delay=delay, start_delay=seconds)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict | None
    key: str | None
    behaviour: Behaviour
    received_at: float = field(default_factory=time.monotonic)
    #: deltas written to the connection
    sent_tokens: int = 0
    #: set when the client hung up before the reply was complete
    client_closed: threading.Event = field(default_factory=threading.Event)
    client_closed_at: float | None = None
    #: set when the server sent the whole reply
    completed: threading.Event = field(default_factory=threading.Event)


class _ClientGone(Exception):
    pass


class FakeProviderServer:
    def __init__(self, protocol: str | Protocol, *, default: Behaviour | None = None,
                 tls: ssl.SSLContext | None = None):
        self.protocol = PROTOCOLS[protocol]() if isinstance(protocol, str) else protocol
        self.default = default or ok()
        self.tls = tls
        self.requests: list[RecordedRequest] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"fake-{self.protocol.name}")
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections_opened = 0

    # Control -----------------------------------------------------------------------
    def start(self) -> FakeProviderServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024, ssl=self.tls),
            self._loop,
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()
            await asyncio.sleep(0)

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.protocol.base_path}"

    def script(self, *behaviours: Behaviour) -> None:
        """Queue replies for the next requests; once used up, `default` answers."""
        with self._lock:
            self._script.extend(behaviours)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """The first `n` requests, waiting until they have arrived."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= n, timeout=timeout):
                raise TimeoutError(f"{len(self.requests)} requests arrived, not {n}")
            return self.requests[:n]

    def wait_tokens_sent(self, n: int, timeout: float = 10.0) -> RecordedRequest:
        """The latest request, once `n` deltas of it have been written."""
        with self._changed:
            ok_ = self._changed.wait_for(
                lambda: bool(self.requests) and self.requests[-1].sent_tokens >= n,
                timeout=timeout,
            )
            if not ok_:
                raise TimeoutError(f"{n} tokens were not sent")
            return self.requests[-1]

    # Serving -----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        self.connections_opened += 1
        first: asyncio.Future | None = None
        try:
            while True:
                parsed = await _read_request(reader, first)
                if parsed is None:
                    break
                first = await self._respond(*parsed, reader, writer)
                if first is None:
                    break
        except (ConnectionError, _ClientGone):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def _record(self, method: str, target: str, headers: dict[str, str], raw: bytes
                ) -> RecordedRequest:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._changed:
            behaviour = self._script.popleft() if self._script else self.default
            req = RecordedRequest(
                method=method, path=parts.path, query=query, headers=headers, body=body,
                key=self.protocol.key_of(headers, query), behaviour=behaviour,
            )
            self.requests.append(req)
            self._changed.notify_all()
        return req

    def _note(self, req: RecordedRequest, **changes: object) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(req, name, value)
            self._changed.notify_all()

    async def _respond(self, method: str, target: str, headers: dict[str, str], raw: bytes,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> asyncio.Future | None:
        """Answer one request. Returns the read that watched the connection meanwhile (it
        yields the start of the next request), or None to close the connection."""
        req = self._record(method, target, headers, raw)
        route = self.protocol.route(method, req.path)
        # Reading while replying is how a client hanging up is seen at once.
        watch = asyncio.ensure_future(reader.read(1))
        try:
            keep_open = await self._reply(req, route, writer, watch)
        except _ClientGone:
            self._note(req, client_closed_at=time.monotonic())
            req.client_closed.set()
            keep_open = False
        if not keep_open:
            watch.cancel()
            return None
        req.completed.set()
        return watch

    async def _reply(self, req: RecordedRequest, route: str | None,
                     writer: asyncio.StreamWriter, watch: asyncio.Future) -> bool:
        """Send the scripted reply; False if the connection was cut."""
        b = req.behaviour
        if b.start_delay:
            await _pause(watch, b.start_delay)
        if route is None:
            await _send_json(writer, 404, self.protocol.error_body(404, "no such route"), ())
            return True
        if b.status != 200:
            message = (b.message or reason_phrase(b.status)).replace("{key}", req.key or "")
            await _send_json(writer, b.status, self.protocol.error_body(b.status, message),
                             b.headers)
            return True
        if route != "stream":
            await _send_json(writer, 200, self.protocol.json_reply(route, req.body or {}), ())
            return True
        return await self._stream(req, writer, watch)

    async def _stream(self, req: RecordedRequest, writer: asyncio.StreamWriter,
                      watch: asyncio.Future) -> bool:
        b = req.behaviour
        frames = self.protocol.frames(req.body or {}, b.tokens, b.finish, b.usage)
        head = ("HTTP/1.1 200 OK\r\n"
                f"content-type: {self.protocol.stream_content_type}\r\n"
                "transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
                "x-request-id: req_fake\r\n\r\n")
        writer.write(head.encode())
        for frame in frames.prelude:
            _write_chunk(writer, frame)
        await _drain(writer, watch)
        for i, frame in enumerate(frames.tokens):
            if b.cut_after is not None and i >= b.cut_after:
                # A connection lost mid-stream: no closing frames, no last chunk.
                writer.transport.abort()
                return False
            if b.error_after is not None and i >= b.error_after:
                status = b.error_status
                _write_chunk(writer, self.protocol.error_event(status, reason_phrase(status)))
                writer.write(b"0\r\n\r\n")
                await _drain(writer, watch)
                return True
            if b.delay:
                await _pause(watch, b.delay)
            _write_chunk(writer, frame)
            await _drain(writer, watch)
            self._note(req, sent_tokens=i + 1)
        for frame in frames.closing:
            _write_chunk(writer, frame)
        writer.write(b"0\r\n\r\n")
        await _drain(writer, watch)
        return True


async def _read_request(reader: asyncio.StreamReader, first: asyncio.Future | None
                        ) -> tuple[str, str, dict[str, str], bytes] | None:
    if first is not None:
        try:
            data = await first
        except (ConnectionError, asyncio.CancelledError):
            return None
        if not data:
            return None
    else:
        data = b""
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = await reader.read(65536)
        if not chunk:
            return None
        rest += chunk
    return method, target, headers, rest[:length]


async def _pause(watch: asyncio.Future, seconds: float) -> None:
    """Sleep, but end at once with _ClientGone if the client hangs up meanwhile."""
    await asyncio.wait({watch}, timeout=seconds)
    _check(watch)


def _check(watch: asyncio.Future) -> None:
    # While a reply is sent, the client sends nothing: any end of its side (EOF, a
    # reset) means it hung up.
    if watch.done() and (watch.cancelled() or watch.exception() or watch.result() == b""):
        raise _ClientGone


async def _drain(writer: asyncio.StreamWriter, watch: asyncio.Future) -> None:
    try:
        await writer.drain()
    except ConnectionError as exc:
        raise _ClientGone from exc
    _check(watch)


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


async def _send_json(writer: asyncio.StreamWriter, status: int, body: dict,
                     headers: tuple[tuple[str, str], ...]) -> None:
    payload = json.dumps(body).encode()
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}", "content-type: application/json",
             f"content-length: {len(payload)}", "x-request-id: req_fake"]
    lines += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    try:
        await writer.drain()
    except ConnectionError as exc:
        raise _ClientGone from exc
