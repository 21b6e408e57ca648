"""The stop half of a RunContext: why a job must stop, and who to tell at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("monkey.worker")


class StopSignal:
    """`stop(reason)` sets the event once and runs the registered callbacks (for example
    closing a provider's stream) in the stopping thread."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._reason: str | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._stop_lock = threading.Lock()

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def stop_reason(self) -> str | None:
        return self._reason

    def wait(self, seconds: float) -> bool:
        return self.stop_event.wait(seconds)

    def on_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._stop_lock:
            registered = not self.stop_event.is_set()
            if registered:
                self._callbacks.append(callback)
        if not registered:
            callback()

        def unregister() -> None:
            with self._stop_lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister

    def stop(self, reason: str) -> None:
        with self._stop_lock:
            if self.stop_event.is_set():
                return
            self._reason = reason
            self.stop_event.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a failing close must not keep the others from running
                log.exception("stop callback failed")
