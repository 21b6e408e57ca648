"""What went wrong in one provider call, and what it means for the job.

Each runtime turns its SDK's exceptions into a `Failure`; the retry loop decides
from it whether to ask again, and `Failure.error()` is the JobError that ends the
job when it does not. Provider text is redacted of the API key before it goes into
any message, and auth failures never quote the provider (providers echo keys there).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import (
    JobError,
    JobInvalid,
    ProviderAuth,
    ProviderRateLimited,
    ProviderUnavailable,
)
from common.settings import PROVIDER_KEY_VARS
from workers.runtimes.providers._retry import retry_after_seconds

AUTH = "auth"
INVALID = "invalid_request"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection_error"
STREAM_CUT = "stream_cut"
RETRYABLE = frozenset({RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION, STREAM_CUT})

REDACTED = "[redacted]"
_MAX_DETAIL = 300


def redact(text: str, secret: str) -> str:
    if secret and secret in text:
        text = text.replace(secret, REDACTED)
    return text


def _clean(text: str, secret: str) -> str:
    text = re.sub(r"\s+", " ", redact(str(text), secret)).strip()
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


@dataclass(frozen=True)
class Failure:
    kind: str
    #: safe to show: redacted and short
    detail: str = ""
    status: int | None = None
    retry_after: float | None = None
    #: the provider's own verdict (`x-should-retry: false`), when it gave one
    should_retry: bool | None = None

    @property
    def retryable(self) -> bool:
        if self.should_retry is False:
            return False
        return self.kind in RETRYABLE

    def describe(self) -> str:
        what = f"HTTP {self.status}" if self.status else self.kind.replace("_", " ")
        return f"{what}: {self.detail}" if self.detail else what

    def error(self, provider: str, retries: int, *, wait_too_long: bool = False) -> JobError:
        """The error that ends the job, after `retries` retries."""
        if self.kind == AUTH:
            return ProviderAuth(
                f"{provider} refused the API key (HTTP {self.status}); "
                f"check {PROVIDER_KEY_VARS[provider]} on the workers"
            )
        if self.kind == INVALID:
            return JobInvalid(f"{provider} rejected the request ({self.describe()})")
        if wait_too_long:
            after = f"it asked to retry after {self.retry_after:.0f}s, longer than we wait"
        else:
            after = f"after {retries} {'retry' if retries == 1 else 'retries'}"
        if self.kind == RATE_LIMITED:
            return ProviderRateLimited(f"{provider} is rate limiting ({after}): {self.describe()}")
        return ProviderUnavailable(f"{provider} is unavailable ({after}): {self.describe()}")


def from_status(status: int, *, headers: Mapping[str, str] | None = None, message: str = "",
                secret: str = "") -> Failure:
    if status in (401, 403):
        kind = AUTH
    elif status == 429:
        kind = RATE_LIMITED
    elif status >= 500 or status in (408, 409):
        kind = SERVER_ERROR
    else:
        kind = INVALID
    hint = None
    if headers is not None:
        value = {str(k).lower(): v for k, v in headers.items()}.get("x-should-retry")
        hint = {"true": True, "false": False}.get(str(value).lower())
    return Failure(
        kind=kind,
        detail="" if kind == AUTH else _clean(message, secret),
        status=status,
        retry_after=retry_after_seconds(headers),
        should_retry=hint,
    )


def from_transport(exc: BaseException, *, secret: str = "") -> Failure | None:
    """Timeouts and broken connections raised by httpx or httpx2 themselves."""
    for name in ("httpx", "httpx2"):
        module = sys.modules.get(name)
        if module is None:
            continue
        if isinstance(exc, module.TimeoutException):
            return Failure(TIMEOUT, _clean(type(exc).__name__, secret))
        if isinstance(exc, module.TransportError | module.StreamError):
            return Failure(CONNECTION, _clean(f"{type(exc).__name__}: {exc}", secret))
    return None


def provider_message(body: Any) -> str:
    """The human message inside a provider's error body, whatever its nesting."""
    for _ in range(4):
        if isinstance(body, Mapping):
            if isinstance(body.get("message"), str):
                return body["message"]
            body = body.get("error")
        elif isinstance(body, list) and body:
            body = body[0]
        else:
            break
    return body if isinstance(body, str) else ""


def from_stainless(sdk: Any, exc: BaseException, *, secret: str = "",
                   status_of_body: Any = None) -> Failure | None:
    """Exceptions of the SDKs generated by Stainless (openai, anthropic, groq), which
    share their names and shapes."""
    if isinstance(exc, sdk.APITimeoutError):
        return Failure(TIMEOUT, "the provider did not answer in time")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause else "connection error"
        return Failure(CONNECTION, _clean(detail, secret))
    if isinstance(exc, sdk.APIError):
        body = getattr(exc, "body", None)
        message = provider_message(body) or getattr(exc, "message", "") or ""
        status = getattr(exc, "status_code", None)
        if status is None or status < 400:
            # An error sent inside a stream that had started well (status 200).
            status = (status_of_body(body) if status_of_body else None) or 500
        response = getattr(exc, "response", None)
        headers = response.headers if response is not None else None
        return from_status(status, headers=headers, message=message, secret=secret)
    return from_transport(exc, secret=secret)


def scrub(exc: BaseException, secret: str) -> None:
    """Remove `secret` from an exception chain that is kept as a JobError's cause."""
    if not secret:
        return
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(secret in str(a) for a in current.args):
            current.args = tuple(redact(str(a), secret) for a in current.args)
        for attr in ("message", "body", "details"):
            value = getattr(current, attr, None)
            if value is not None and secret in repr(value):
                try:
                    setattr(current, attr, redact(str(value), secret))
                except AttributeError:
                    pass
        current = current.__cause__ or current.__context__


__all__ = [
    "AUTH", "CONNECTION", "INVALID", "RATE_LIMITED", "RETRYABLE", "SERVER_ERROR",
    "STREAM_CUT", "TIMEOUT", "Failure", "from_stainless", "from_status", "from_transport",
    "provider_message", "redact", "scrub",
]
