"""Shared HTTP clients whose sockets a job can cut from another thread.

Cancelling a job must release the worker thread that is blocked reading the
provider's stream. Closing an httpx response from another thread does not do that
on Linux: `close()` on a socket that another thread is reading leaves the reader
blocked until the peer speaks (measured: 10 s, until the server gave up), and the
provider never learns that we left. `shutdown(SHUT_RDWR)` wakes the reader at once
and sends the FIN.

So the clients given to the SDKs run on an httpcore network backend that notes,
for every read and write, which socket the calling thread is using. A job runs
each provider call inside an `AbortableCall`, which the job's `on_stop` callback
aborts: that shuts down the socket the job's thread is using right now, whether it
is connecting, waiting for the response headers or reading the stream. (httpx takes
no network backend: workers/compat/httpx_pool.py puts ours under its transport.)
"""

from __future__ import annotations

import importlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from workers.compat.httpx_pool import transport_on_backend

_local = threading.local()


def _shutdown(sock: socket.socket) -> None:
    # The base class's shutdown, not SSLSocket's: that one also drops the SSL object,
    # which the thread still reading the socket is using.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected: nothing left to wake


class AbortableCall:
    """One provider call made by the current thread, which another thread may abort.

    Used as a context manager around the SDK call and the reading of its stream.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._responses: list[Any] = []
        self._active = False
        self.aborted = False

    def __enter__(self) -> AbortableCall:
        _local.call = self
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _local.call = None
        with self._lock:
            self._active = False
            self._sock = None
            responses, self._responses = self._responses, []
        # An SDK generator left unfinished (a break, an error) keeps its response open,
        # and with it a connection of the pool, until garbage collection: close it here,
        # on the thread that owns it.
        for response in responses:
            response.close()

    def abort(self) -> None:
        """Cut the call's connection now; safe from any thread, never blocks."""
        with self._lock:
            self.aborted = True
            sock = self._sock if self._active else None
        if sock is not None:
            _shutdown(sock)

    def bind(self, sock: socket.socket | None) -> None:
        if sock is None or (sock is self._sock and not self.aborted):
            return
        with self._lock:
            if not self._active:
                return
            self._sock = sock
            aborted = self.aborted
        if aborted:
            _shutdown(sock)

    def track(self, response: Any) -> None:
        with self._lock:
            if self._active:
                self._responses.append(response)


def current_call() -> AbortableCall | None:
    return getattr(_local, "call", None)


class _AbortableStream:
    """An httpcore network stream that binds its socket to the reading thread's call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._sock = inner.get_extra_info("socket")

    def _bind(self) -> None:
        call = current_call()
        if call is not None:
            call.bind(self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._bind()
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._bind()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> _AbortableStream:
        return _AbortableStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AbortableBackend:
    """Wraps httpcore's SyncBackend (the same duck type in httpcore and httpcore2)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> Any:
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )
        return _AbortableStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> Any:
        stream = self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _AbortableStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _track_response(response: Any) -> None:
    call = current_call()
    if call is not None:
        call.track(response)


def make_http_client(flavor: str, *, timeout_s: float, connect_timeout_s: float,
                     max_connections: int) -> Any:
    """A pooled, thread-safe client of `flavor` ("httpx" or "httpx2") for one runtime.

    The SDKs pin their HTTP library: openai, anthropic and google-genai take an httpx2
    client, groq an httpx one. The two have the same API under different names.
    """
    httpx_mod = importlib.import_module(flavor)
    limits = httpx_mod.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    transport = transport_on_backend(flavor, limits=limits, wrap_backend=_AbortableBackend)
    hooks: dict[str, list[Callable[[Any], None]]] = {"response": [_track_response]}
    return httpx_mod.Client(
        transport=transport,
        timeout=httpx_mod.Timeout(timeout_s, connect=connect_timeout_s),
        follow_redirects=True,
        event_hooks=hooks,
    )


__all__ = ["AbortableCall", "current_call", "make_http_client"]
