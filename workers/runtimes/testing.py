"""An in-memory RunContext for testing runtimes without the lifecycle, Redis or a database."""

from __future__ import annotations

import time

from workers.runtimes.stopping import StopSignal


class RecordingContext(StopSignal):
    """Records tokens, restarts and progress; `stop()` or `timeout_s` stop the job."""

    def __init__(self, timeout_s: float | None = None):
        super().__init__()
        self.tokens: list[str] = []
        self.restarts: list[str] = []
        self.progress_events: list[dict] = []
        self.retries: list[str] = []
        self.token_times: list[float] = []
        self._deadline = time.monotonic() + timeout_s if timeout_s else None

    # The RunContext protocol (stopping comes from StopSignal) -----------------------
    def should_stop(self) -> bool:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self.stop("timeout")
        return super().should_stop()

    def token(self, text: str) -> None:
        self.tokens.append(text)
        self.token_times.append(time.monotonic())

    def restart(self, reason: str) -> None:
        self.restarts.append(reason)
        self.tokens.clear()

    def progress(self, **data) -> None:
        self.progress_events.append(data)

    def wait(self, seconds: float) -> bool:
        return super().wait(seconds) or self.should_stop()

    def count_retry(self, error_type: str) -> None:
        self.retries.append(error_type)

    # Test controls -----------------------------------------------------------
    def stop(self, reason: str = "cancelled") -> None:
        super().stop(reason)

    @property
    def text(self) -> str:
        return "".join(self.tokens)
