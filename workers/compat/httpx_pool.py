"""All our use of httpx's internals: the httpcore pool inside its HTTPTransport.

Cancelling a job must cut the socket its thread is reading (measured: closing the
response from another thread left the reader blocked 10 s; see
workers/runtimes/providers/_http.py). httpcore opens every connection through a
network backend, and its ConnectionPool takes one (`network_backend`, documented);
httpx's HTTPTransport builds that pool itself and has no parameter for it, in httpx
0.28 and in httpx2 (the fork the newer SDKs use). So the transport's pool,
`HTTPTransport._pool`, is replaced by an equal one on our backend. The public way,
a BaseTransport of our own over httpcore, would copy HTTPTransport's request,
response and exception mapping, which the SDKs' retries depend on: more of httpx to
keep in step with than one attribute.

Only the transport given to the client gets our backend: proxies from the
environment get transports of their own from the client, whose calls cannot be cut.
Checked against the versions in CHECKED (tests/workers/compat/test_httpx_pool.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

CHECKED = {
    "httpx": ">=0.28.1,<0.29", "httpcore": ">=1.0.9,<1.1",
    "httpx2": ">=2.16.2,<2.17", "httpcore2": ">=2.16.2,<2.17",
}
HTTPCORE_OF = {"httpx": "httpcore", "httpx2": "httpcore2"}


def transport_on_backend(flavor: str, *, limits: Any,
                         wrap_backend: Callable[[Any], Any]) -> Any:
    """An HTTPTransport of `flavor` ("httpx" or "httpx2") whose connections are opened
    by `wrap_backend(SyncBackend())`."""
    httpx_mod = importlib.import_module(flavor)
    httpcore_mod = importlib.import_module(HTTPCORE_OF[flavor])
    transport = httpx_mod.HTTPTransport(limits=limits)
    if not isinstance(getattr(transport, "_pool", None), httpcore_mod.ConnectionPool):
        # Loudly, not a client whose calls silently cannot be cancelled.
        raise RuntimeError(f"{flavor} {httpx_mod.__version__} keeps no httpcore pool in "
                           "HTTPTransport._pool: re-check workers/compat/httpx_pool.py")
    transport._pool = httpcore_mod.ConnectionPool(
        ssl_context=httpx_mod.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=wrap_backend(httpcore_mod.SyncBackend()),
    )
    return transport


__all__ = ["CHECKED", "HTTPCORE_OF", "transport_on_backend"]
