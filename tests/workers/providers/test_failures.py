"""Provider failures: what is retried, how long it waits, and how a job ends."""

from __future__ import annotations

import pytest

from common.errors import JobInvalid, ProviderAuth, ProviderRateLimited, ProviderUnavailable
from tests.fakes.providers import (
    cut,
    error,
    expected_text,
    ok,
    slow_start,
    stream_error,
    token_text,
)
from tests.workers.providers.conftest import WatchedContext, make_job

pytestmark = pytest.mark.timeout(30)


def _gap(first, second) -> float:
    return second.received_at - first.received_at


def test_429_with_retry_after_is_waited_for_then_succeeds(provider, fake, make_runtime):
    fake.script(error(429, retry_after=1), ok(tokens=3))
    ctx = WatchedContext()
    result = make_runtime().generate(make_job(provider), ctx)

    assert result.text == expected_text(3)
    assert ctx.retries == ["rate_limited"]
    assert ctx.restarts == []  # nothing had been streamed
    assert ctx.progress_events[0]["provider_retry"] == 1
    first, second = fake.wait_requests(2)
    assert _gap(first, second) >= 0.95


def test_retry_after_ms_is_honoured(provider, fake, make_runtime):
    fake.script(error(429, retry_after_ms=300), ok(tokens=2))
    ctx = WatchedContext()
    make_runtime().generate(make_job(provider), ctx)
    first, second = fake.wait_requests(2)
    assert _gap(first, second) >= 0.28
    assert ctx.retries == ["rate_limited"]


def test_retry_after_beyond_the_cap_fails_at_once(provider, fake, make_runtime):
    fake.script(error(429, retry_after=3600))
    with pytest.raises(ProviderRateLimited, match="retry after 3600s"):
        make_runtime().generate(make_job(provider), WatchedContext())
    assert len(fake.requests) == 1


def test_500_beyond_the_retry_bound_is_unavailable(provider, fake, make_runtime):
    fake.default = error(500)
    ctx = WatchedContext()
    with pytest.raises(ProviderUnavailable, match="after 2 retries") as caught:
        make_runtime(provider_max_retries=2).generate(make_job(provider), ctx)
    assert caught.value.type == "provider_unavailable"
    assert "HTTP 500" in caught.value.message
    assert len(fake.requests) == 3
    assert ctx.retries == ["server_error", "server_error"]


def test_429_beyond_the_retry_bound_is_rate_limited(provider, fake, make_runtime):
    fake.default = error(429)
    with pytest.raises(ProviderRateLimited) as caught:
        make_runtime(provider_max_retries=1).generate(make_job(provider), WatchedContext())
    assert caught.value.type == "provider_rate_limited"
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_not_retried(provider, fake, make_runtime, status):
    fake.script(error(status))
    ctx = WatchedContext()
    with pytest.raises(ProviderAuth) as caught:
        make_runtime().generate(make_job(provider), ctx)
    assert caught.value.type == "provider_auth"
    assert f"{provider.upper()}_API_KEY" in caught.value.message
    assert len(fake.requests) == 1
    assert ctx.retries == []


@pytest.mark.parametrize("provider", ["google"])
def test_gemini_invalid_key_400_is_an_auth_failure(provider, fake, make_runtime):
    fake.script(error(400, message="API key not valid. Please pass a valid API key."))
    with pytest.raises(ProviderAuth):
        make_runtime().generate(make_job(provider), WatchedContext())
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_requests_are_invalid_and_not_retried(provider, fake, make_runtime, status):
    fake.script(error(status, message="model does not exist"))
    with pytest.raises(JobInvalid, match="model does not exist") as caught:
        make_runtime().generate(make_job(provider), WatchedContext())
    assert caught.value.type == "invalid_request"
    assert len(fake.requests) == 1


def test_a_stream_cut_midway_restarts_and_the_text_is_whole(provider, fake, make_runtime):
    fake.script(cut(after=3, tokens=6), ok(tokens=6))
    ctx = WatchedContext()
    result = make_runtime().generate(make_job(provider), ctx)

    assert result.text == expected_text(6)
    assert ctx.tokens == [token_text(i) for i in range(6)]  # after the restart, not doubled
    assert len(ctx.restarts) == 1 and ctx.restarts[0].startswith("provider retry:")
    assert ctx.retries == ["connection_error"]
    assert result.completion_tokens == 6
    assert fake.requests[0].sent_tokens == 3


@pytest.mark.parametrize("status", [500, 529])
def test_an_error_inside_the_stream_is_retried(provider, fake, make_runtime, status):
    # Anthropic's `overloaded_error` event, OpenAI's and Gemini's `{"error": ...}` chunks.
    fake.script(stream_error(after=2, status=status, tokens=4), ok(tokens=4))
    ctx = WatchedContext()
    result = make_runtime().generate(make_job(provider), ctx)
    assert result.text == expected_text(4)
    assert ctx.retries == ["server_error"]
    assert len(ctx.restarts) == 1


@pytest.mark.parametrize("provider", ["anthropic", "google"])
def test_a_rate_limit_inside_the_stream_is_rate_limited(provider, fake, make_runtime):
    fake.default = stream_error(after=1, status=429)
    with pytest.raises(ProviderRateLimited):
        make_runtime(provider_max_retries=1).generate(make_job(provider), WatchedContext())
    assert len(fake.requests) == 2


def test_a_read_timeout_is_retried_then_unavailable(provider, fake, make_runtime):
    fake.default = slow_start(5)
    ctx = WatchedContext()
    runtime = make_runtime(provider_timeout_s=0.3, provider_max_retries=1)
    with pytest.raises(ProviderUnavailable):
        runtime.generate(make_job(provider), ctx)
    assert ctx.retries == ["timeout"]
    assert len(fake.requests) == 2


def test_no_key_fails_naming_the_variable_without_a_request(provider, fake, make_runtime):
    runtime = make_runtime(**{f"{provider}_api_key": ""})
    with pytest.raises(ProviderAuth, match=f"{provider.upper()}_API_KEY is not set"):
        runtime.generate(make_job(provider), WatchedContext())
    assert fake.requests == []


def test_a_bad_input_is_refused_before_any_request(provider, fake, make_runtime):
    job = make_job(provider, messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(JobInvalid, match="role"):
        make_runtime().generate(job, WatchedContext())
    with pytest.raises(JobInvalid, match="temperature"):
        make_runtime().generate(make_job(provider, temperature="hot"), WatchedContext())
    assert fake.requests == []
