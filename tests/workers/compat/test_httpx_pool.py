"""Pins workers.compat.httpx_pool to the httpx and httpx2 it was checked against.

An upgrade fails here when a version leaves CHECKED, when a transport stops sending
its requests through `_pool` (our backend would silently see no connection, and a
cancel would no longer cut the socket), or when HTTPTransport takes a network backend
of its own: then the replacement can go.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

import pytest
from packaging.specifiers import SpecifierSet

from workers.compat import httpx_pool as compat

pytestmark = pytest.mark.timeout(30)
FLAVORS = sorted(compat.HTTPCORE_OF)


@pytest.mark.parametrize("dist", sorted(compat.CHECKED))
def test_installed_version_is_the_checked_one(dist):
    assert version(dist) in SpecifierSet(compat.CHECKED[dist]), (
        f"{dist} left the range workers/compat/httpx_pool.py was checked against: "
        "re-read the code it names, then move CHECKED")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_httpx_still_takes_no_network_backend(flavor):
    params = inspect.signature(importlib.import_module(flavor).HTTPTransport).parameters
    assert "network_backend" not in params, (
        f"{flavor}'s HTTPTransport takes a network backend now: pass ours, drop _pool")
    pool = importlib.import_module(compat.HTTPCORE_OF[flavor]).ConnectionPool
    assert "network_backend" in inspect.signature(pool).parameters


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _Counting:
    """A network backend that counts the connections it opens."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.connects = 0

    def connect_tcp(self, *args, **kwargs):
        self.connects += 1
        return self.inner.connect_tcp(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_requests_go_through_our_backend(flavor, url):
    httpx_mod = importlib.import_module(flavor)
    backends: list[_Counting] = []

    def wrap(inner):
        backends.append(_Counting(inner))
        return backends[-1]

    limits = httpx_mod.Limits(max_connections=2, max_keepalive_connections=2)
    transport = compat.transport_on_backend(flavor, limits=limits, wrap_backend=wrap)
    with httpx_mod.Client(transport=transport, trust_env=False) as client:
        assert [client.get(url).text for _ in range(2)] == ["ok", "ok"]
    # HTTP/1.0 server: a connection per request, each opened by our backend.
    assert [b.connects for b in backends] == [2]
