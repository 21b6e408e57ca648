"""Stopping a job closes the provider's connection at once, whatever the call is doing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from common.errors import JobTimeout
from tests.fakes.providers import error, expected_text, ok, slow_start
from tests.workers.providers.conftest import WatchedContext, make_job

pytestmark = pytest.mark.timeout(30)

#: how long the test waits for the close and the freed thread (generous on a busy machine;
#: the latency itself is asserted separately and is well under a millisecond here)
PROMPT = 2.0


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def test_cancel_mid_stream_closes_the_connection(provider, fake, make_runtime, pool):
    fake.script(ok(tokens=200, delay=0.1))
    ctx = WatchedContext()
    running = pool.submit(make_runtime().generate, make_job(provider), ctx)
    ctx.wait_tokens(3)

    stopped_at = time.monotonic()
    ctx.stop("cancelled")
    request = fake.requests[0]
    assert request.client_closed.wait(PROMPT), "the server never saw the connection close"
    result = running.result(timeout=PROMPT)
    closed_after = request.client_closed_at - stopped_at

    assert result.finish_reason == "cancelled"
    assert result.text and expected_text(200).startswith(result.text)
    assert request.sent_tokens < 200 and not request.completed.is_set()
    assert closed_after < 0.5, f"closed {closed_after:.3f}s after the cancel"
    print(f"{provider}: the server saw the close {closed_after * 1000:.1f} ms after the cancel")
    assert ctx.retries == []


def test_cancel_before_the_first_byte_closes_the_connection(provider, fake, make_runtime, pool):
    fake.script(slow_start(20))
    ctx = WatchedContext()
    running = pool.submit(make_runtime().generate, make_job(provider), ctx)
    (request,) = fake.wait_requests(1)

    ctx.stop("cancelled")
    assert request.client_closed.wait(PROMPT)
    result = running.result(timeout=PROMPT)
    assert (result.text, result.finish_reason) == ("", "cancelled")


def test_cancel_during_a_backoff_wait_ends_it(provider, fake, make_runtime, pool):
    fake.script(error(429, retry_after=30))
    ctx = WatchedContext()
    running = pool.submit(make_runtime().generate, make_job(provider), ctx)
    ctx.wait_progress(1)  # the retry is announced just before its wait starts

    ctx.stop("cancelled")
    result = running.result(timeout=PROMPT)
    assert result.finish_reason == "cancelled"
    assert len(fake.requests) == 1


def test_a_job_past_its_timeout_raises_timeout(provider, fake, make_runtime):
    fake.script(ok(tokens=200, delay=0.1))
    runtime = make_runtime()
    ctx = WatchedContext(timeout_s=2.0)  # the stream would take 20 s
    with pytest.raises(JobTimeout):
        runtime.generate(make_job(provider), ctx)
    (request,) = fake.wait_requests(1)
    assert request.client_closed.wait(PROMPT)
