"""What every hosted provider shares: one pooled client, the retry loop, the stream.

A subclass says how to build its SDK client, how to map a job to a request and
stream it into a `StreamOutput`, and how to read its SDK's exceptions; this class
does the rest: retries with backoff, restarts after a partial stream, cancellation
that cuts the connection, and errors that never carry the API key.
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from common.errors import JobError, JobTimeout, MonkeyError, ProviderAuth, ProviderUnavailable
from common.settings import PROVIDER_KEY_VARS, Settings
from workers.runtimes.base import GenerateResult, JobSpec, RunContext, Runtime
from workers.runtimes.providers._failures import STREAM_CUT, Failure, from_transport, scrub
from workers.runtimes.providers._http import AbortableCall, make_http_client
from workers.runtimes.providers._retry import RetryPolicy

log = logging.getLogger("monkey.providers")
T = TypeVar("T")

_LENGTH_REASONS = frozenset({"length", "max_tokens", "model_context_window_exceeded"})


def finish_reason(raw: Any) -> str:
    """A provider's finish reason as ours: "length" when it ran out of tokens, else "stop"."""
    name = getattr(raw, "value", raw)
    return "length" if str(name).lower() in _LENGTH_REASONS else "stop"


class StreamCut(MonkeyError):
    """The stream ended before the provider said it had finished."""


class StreamOutput:
    """One attempt's text, usage and finish, each delta passed on to the job at once."""

    def __init__(self, ctx: RunContext):
        self._ctx = ctx
        self._parts: list[str] = []
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.finish_reason: str | None = None

    def text(self, delta: str | None) -> None:
        if delta:
            self._parts.append(delta)
            self._ctx.token(delta)

    def usage(self, prompt: int | None = None, completion: int | None = None) -> None:
        if prompt is not None:
            self.prompt_tokens = prompt
        if completion is not None:
            self.completion_tokens = completion

    def finish(self, raw: Any) -> None:
        self.finish_reason = finish_reason(raw)

    @property
    def streamed(self) -> bool:
        return bool(self._parts)

    @property
    def stopping(self) -> bool:
        return self._ctx.should_stop()

    def result(self, finish: str | None = None) -> GenerateResult:
        # Without usage from the provider (a cut stream, a provider that sends none),
        # each delta counts as one token.
        completion = self.completion_tokens
        return GenerateResult(
            text="".join(self._parts),
            finish_reason=finish or self.finish_reason or "stop",
            prompt_tokens=self.prompt_tokens or 0,
            completion_tokens=len(self._parts) if completion is None else completion,
        )


class _Generation:
    """The output of a generation across its attempts."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.out = StreamOutput(ctx)

    def attempt(self, stream: Callable[[StreamOutput], None]) -> GenerateResult:
        self.out = StreamOutput(self.ctx)
        stream(self.out)
        if self.out.finish_reason is not None:
            return self.out.result()
        if self.ctx.should_stop():
            return self.stopped()
        raise StreamCut("the stream ended before the provider finished")

    def restart(self, failure: Failure) -> None:
        if self.out.streamed:
            # The new attempt streams the text from its start: the job's text is
            # replaced, not appended to.
            self.ctx.restart(f"provider retry: {failure.describe()}")
        self.out = StreamOutput(self.ctx)

    def stopped(self) -> GenerateResult:
        _raise_if_timeout(self.ctx)
        return self.out.result("cancelled")


def _raise_if_timeout(ctx: RunContext) -> None:
    if ctx.stop_reason() == "timeout":
        raise JobTimeout("the job ran past its timeout_s")


class ProviderRuntime(Runtime):
    """One hosted provider; one instance per worker process, shared by all its threads."""

    provider: ClassVar[str]
    default_base_url: ClassVar[str]
    #: the HTTP library the SDK takes a client from: "httpx2" or "httpx"
    http_flavor: ClassVar[str] = "httpx2"
    connect_timeout_s: ClassVar[float] = 10.0

    def __init__(self, settings: Settings, *, policy: RetryPolicy | None = None):
        self.settings = settings
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.base_url = settings.provider_base_url(self.provider) or self.default_base_url
        self._key = settings.provider_key(self.provider)
        self._sdk_client: Any = None
        self._lock = threading.Lock()

    # Subclasses ------------------------------------------------------------------
    @abstractmethod
    def build_client(self, api_key: str, http_client: Any) -> Any:
        """The SDK client, with its own retries off (max_retries=0): the policy is ours."""

    @abstractmethod
    def build_request(self, job: JobSpec) -> dict:
        """The provider-shaped request for a generation job (JobInvalid if it cannot be)."""

    @abstractmethod
    def stream(self, client: Any, request: dict, out: StreamOutput) -> None:
        """One attempt: send the request, stream every delta into `out`, return at the end
        (or early when `out.stopping`)."""

    @abstractmethod
    def failure(self, exc: BaseException) -> Failure | None:
        """What an exception of this SDK means, or None if it is not the provider's doing."""

    # Runtime ------------------------------------------------------------------------
    def load(self) -> None:
        if self._key:
            self.client()

    def client(self) -> Any:
        if self._sdk_client is None:
            with self._lock:
                if self._sdk_client is None:
                    if not self._key:
                        raise ProviderAuth(
                            f"{PROVIDER_KEY_VARS[self.provider]} is not set on the workers"
                        )
                    http = make_http_client(
                        self.http_flavor,
                        timeout_s=self.settings.provider_timeout_s,
                        connect_timeout_s=min(self.connect_timeout_s,
                                              self.settings.provider_timeout_s),
                        max_connections=max(100, 2 * self.settings.worker_concurrency),
                    )
                    self._sdk_client = self.build_client(self._key, http)
        return self._sdk_client

    def generate(self, job: JobSpec, ctx: RunContext) -> GenerateResult:
        client = self.client()
        request = self.build_request(job)
        generation = _Generation(ctx)
        return self.with_retries(
            ctx,
            lambda: generation.attempt(lambda out: self.stream(client, request, out)),
            on_retry=generation.restart,
            stopped=generation.stopped,
        )

    # The retry loop -----------------------------------------------------------------
    def with_retries(self, ctx: RunContext, attempt: Callable[[], T], *,
                     on_retry: Callable[[Failure], None], stopped: Callable[[], T]) -> T:
        """Run `attempt` until it succeeds, retrying what the policy allows."""
        retries = 0
        while True:
            if ctx.should_stop():
                return stopped()
            call = AbortableCall()
            unregister = ctx.on_stop(call.abort)
            try:
                with call:
                    return attempt()
            except JobError:
                raise
            except Exception as exc:
                if ctx.should_stop():
                    return stopped()
                failure = self._classify(exc)
                self._raise_if_final(failure, retries, exc)
            finally:
                unregister()
            retries += 1
            delay = self.policy.delay(retries, failure.retry_after)
            ctx.count_retry(failure.kind)
            on_retry(failure)
            ctx.progress(provider_retry=retries, error_type=failure.kind, delay_s=round(delay, 3))
            log.info(
                "%s call failed (%s); retry %d of %d in %.2fs", self.provider,
                failure.describe(), retries, self.policy.max_retries, delay,
            )
            if ctx.wait(delay):
                return stopped()

    def _classify(self, exc: Exception) -> Failure:
        if isinstance(exc, StreamCut):
            return Failure(STREAM_CUT, str(exc))
        failure = self.failure(exc) or from_transport(exc, secret=self._key)
        if failure is None:
            raise exc  # not the provider's doing: a bug of ours, which must surface
        return failure

    def _raise_if_final(self, failure: Failure, retries: int, exc: Exception) -> None:
        too_long = (failure.retry_after or 0.0) > self.policy.max_retry_after_s
        if failure.retryable and retries < self.policy.max_retries and not too_long:
            return
        # The cause stays attached for the traceback, with the key taken out of it.
        scrub(exc, self._key)
        raise failure.error(self.provider, retries, wait_too_long=too_long) from exc

    def stopped_call(self, ctx: RunContext) -> Any:
        """For calls with no partial result (embeddings): stopping ends them with an error,
        which the lifecycle records as the stop's own outcome (cancelled or timeout)."""
        _raise_if_timeout(ctx)
        raise ProviderUnavailable(f"{self.provider} call stopped: {ctx.stop_reason()}")


__all__ = ["ProviderRuntime", "StreamCut", "StreamOutput", "finish_reason"]
