"""When and how long to wait before asking a provider again.

Exponential backoff with full jitter (a uniform wait between 0 and the capped
exponential), as AWS's "Exponential Backoff and Jitter" recommends for many clients
hitting one server; a provider's `Retry-After` (seconds or an HTTP date) or
`retry-after-ms` is a floor under that wait.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from common.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    #: the first retry waits up to `base_s`, each further one up to twice as long...
    base_s: float = 0.5
    #: ...but never more than `cap_s`
    cap_s: float = 20.0
    #: a provider asking us to come back later than this is not waited for: the job
    #: fails now rather than holding a worker thread for an hour-long quota reset
    max_retry_after_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetryPolicy:
        return cls(max_retries=settings.provider_max_retries, **overrides)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (retry - 1))
        jittered = random.uniform(0.0, ceiling)
        if retry_after is not None:
            return max(retry_after, jittered)
        return jittered


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: float | None = None
                        ) -> float | None:
    """The wait a response asks for: `retry-after-ms`, else `Retry-After` in seconds or
    as an HTTP date; None when absent or unreadable."""
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP dates are in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


__all__ = ["RetryPolicy", "retry_after_seconds"]
