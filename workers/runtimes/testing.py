"""An in-memory RunContext for testing runtimes without the lifecycle, Redis or a database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RecordingContext:
    """Records tokens, restarts and progress; `cancel()` or `timeout_s` stop the job."""

    def __init__(self, timeout_s: float | None = None):
        self.stop_event = threading.Event()
        self.tokens: list[str] = []
        self.restarts: list[str] = []
        self.progress_events: list[dict] = []
        self.retries: list[str] = []
        self.token_times: list[float] = []
        self._reason: str | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + timeout_s if timeout_s else None

    # The RunContext protocol -------------------------------------------------
    def should_stop(self) -> bool:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self.stop("timeout")
        return self.stop_event.is_set()

    def stop_reason(self) -> str | None:
        return self._reason

    def on_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            if self.stop_event.is_set():
                callback()
            else:
                self._callbacks.append(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister

    def token(self, text: str) -> None:
        self.tokens.append(text)
        self.token_times.append(time.monotonic())

    def restart(self, reason: str) -> None:
        self.restarts.append(reason)
        self.tokens.clear()

    def progress(self, **data) -> None:
        self.progress_events.append(data)

    def wait(self, seconds: float) -> bool:
        return self.stop_event.wait(seconds) or self.should_stop()

    def count_retry(self, error_type: str) -> None:
        self.retries.append(error_type)

    # Test controls -----------------------------------------------------------
    def stop(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self.stop_event.is_set():
                return
            self._reason = reason
            self.stop_event.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    @property
    def text(self) -> str:
        return "".join(self.tokens)
