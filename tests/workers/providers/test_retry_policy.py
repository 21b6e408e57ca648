"""Backoff with full jitter, and reading Retry-After in all its forms."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from common.settings import Settings
from workers.runtimes.providers import RetryPolicy
from workers.runtimes.providers._failures import Failure, from_status
from workers.runtimes.providers._retry import retry_after_seconds

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 7, UTC), usegmt=True)}, 7.0),
    ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW - 7, UTC), usegmt=True)}, 0.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "-3"}, 0.0),
    ({}, None),
    (None, None),
])
def test_retry_after(headers, seconds):
    assert retry_after_seconds(headers, now=NOW) == seconds


def test_full_jitter_stays_under_the_capped_exponential():
    policy = RetryPolicy(base_s=0.5, cap_s=4.0)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.delay(retry) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # spread out


def test_retry_after_is_a_floor():
    policy = RetryPolicy(base_s=0.5, cap_s=4.0)
    assert all(policy.delay(1, retry_after=3.0) >= 3.0 for _ in range(100))
    assert all(policy.delay(5, retry_after=0.1) <= 4.0 for _ in range(100))


def test_policy_from_settings():
    policy = RetryPolicy.from_settings(Settings(provider_max_retries=7), base_s=0.1)
    assert (policy.max_retries, policy.base_s) == (7, 0.1)


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (400, "invalid_request", False), (401, "auth", False), (403, "auth", False),
    (404, "invalid_request", False), (408, "server_error", True), (409, "server_error", True),
    (422, "invalid_request", False), (429, "rate_limited", True), (500, "server_error", True),
    (503, "server_error", True), (529, "server_error", True),
])
def test_statuses(status, kind, retryable):
    failure = from_status(status)
    assert (failure.kind, failure.retryable) == (kind, retryable)


def test_the_providers_should_retry_false_is_obeyed():
    assert not from_status(500, headers={"x-should-retry": "false"}).retryable
    assert from_status(500, headers={"X-Should-Retry": "true"}).retryable


def test_auth_failures_never_quote_the_provider():
    failure = from_status(401, message="Incorrect API key provided: sk-abc")
    assert failure.detail == ""
    assert "sk-abc" not in failure.error("openai", 0).message


def test_details_are_redacted_and_short():
    failure = from_status(500, message="x" * 1000 + " sk-secret", secret="sk-secret")
    assert len(failure.detail) <= 300 and "sk-secret" not in failure.detail
    assert isinstance(failure, Failure)
