"""Over HTTPS, as the real providers are: streaming works and a cancel still cuts the
connection at once (the socket under TLS is shut down, not the TLS object)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fakes.providers import FakeProviderServer, expected_text, ok
from tests.fakes.providers.tls import self_signed
from tests.workers.providers.conftest import FAST, WatchedContext, make_job, provider_settings
from workers.runtimes.providers import RetryPolicy, make_provider_runtime

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def https_runtime(provider, tmp_path, monkeypatch):
    context, ca_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # read when the client is built
    with FakeProviderServer(provider, tls=context) as server:
        assert server.base_url.startswith("https://")
        settings = provider_settings(provider, server.base_url)
        runtime = make_provider_runtime(
            provider, settings, policy=RetryPolicy.from_settings(settings, **FAST))
        runtime.load()
        yield server, runtime


def test_streams_and_cancels_over_tls(provider, https_runtime):
    server, runtime = https_runtime
    server.script(ok(tokens=4), ok(tokens=200, delay=0.1))
    assert runtime.generate(make_job(provider), WatchedContext()).text == expected_text(4)

    ctx = WatchedContext()
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(runtime.generate, make_job(provider), ctx)
        ctx.wait_tokens(2)
        ctx.stop("cancelled")
        request = server.requests[-1]
        assert request.client_closed.wait(1.0)
        result = running.result(timeout=1.0)
    assert result.finish_reason == "cancelled"
    assert result.text and expected_text(200).startswith(result.text)
