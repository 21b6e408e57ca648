"""Provider runtimes against local fake servers: the real SDKs over real sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from common.settings import Settings
from tests.fakes.providers import FakeProviderServer
from workers.runtimes.base import JobSpec
from workers.runtimes.providers import RetryPolicy, make_provider_runtime
from workers.runtimes.providers._base import ProviderRuntime
from workers.runtimes.testing import RecordingContext

PROVIDERS = ["openai", "anthropic", "groq", "google", "xai"]
#: recognisable, so that a test can prove it appears nowhere
FAKE_KEY = "sk-monkeytest-SECRET-7f3a9c1e5b"
#: backoff short enough for tests, long enough to be jittered
FAST = {"base_s": 0.01, "cap_s": 0.05}


class WatchedContext(RecordingContext):
    """A RecordingContext that tests can wait on: `wait_tokens(n)`, `wait_progress(n)`."""

    def __init__(self, timeout_s: float | None = None):
        super().__init__(timeout_s)
        self._got = threading.Condition()

    def token(self, text: str) -> None:
        with self._got:
            super().token(text)
            self._got.notify_all()

    def progress(self, **data) -> None:
        with self._got:
            super().progress(**data)
            self._got.notify_all()

    def wait_tokens(self, n: int, timeout: float = 10.0) -> None:
        with self._got:
            if not self._got.wait_for(lambda: len(self.tokens) >= n, timeout=timeout):
                raise TimeoutError(f"got {len(self.tokens)} tokens, not {n}")

    def wait_progress(self, n: int = 1, timeout: float = 10.0) -> None:
        with self._got:
            if not self._got.wait_for(lambda: len(self.progress_events) >= n, timeout=timeout):
                raise TimeoutError(f"got {len(self.progress_events)} progress events, not {n}")


def make_job(provider: str, model: str = "fake-model", *, prompt: str = "say something short",
             messages: list[dict] | None = None, **params) -> JobSpec:
    data = {"messages": messages} if messages is not None else {"prompt": prompt}
    return JobSpec(id=f"job-{time.monotonic_ns()}", kind="generate",
                   model=f"{provider}/{model}", input=data, params=params, attempt=1)


def provider_settings(provider: str, base_url: str, **overrides) -> Settings:
    values = {
        f"{provider}_api_key": FAKE_KEY,
        f"{provider}_base_url": base_url,
        "provider_max_retries": 3,
        "provider_timeout_s": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=PROVIDERS)
def provider(request) -> str:
    return request.param


@pytest.fixture
def fake(provider: str) -> Iterator[FakeProviderServer]:
    with FakeProviderServer(provider) as server:
        yield server


@pytest.fixture
def make_runtime(provider: str, fake: FakeProviderServer) -> Callable[..., ProviderRuntime]:
    """make_runtime(**settings) -> the provider's runtime pointed at the fake."""

    def factory(policy: dict | None = None, **settings) -> ProviderRuntime:
        s = provider_settings(provider, fake.base_url, **settings)
        runtime = make_provider_runtime(
            provider, s, policy=RetryPolicy.from_settings(s, **{**FAST, **(policy or {})})
        )
        runtime.load()
        return runtime

    return factory
