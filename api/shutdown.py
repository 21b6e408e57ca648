"""The API process's notice that it is shutting down, for the responses that would
otherwise hold the shutdown up.

uvicorn's graceful shutdown stops accepting connections, then waits for the open
responses to end; an event stream follows its job for as long as the job runs, so a
redeploy waited out `timeout_graceful_shutdown` and then cut every stream. Here the
app's lifespan chains a handler onto the server's own SIGTERM and SIGINT handlers:
when one arrives, `stopping` is set and each open stream ends at once with a
reconnect hint (api/sse.py), which a client follows with Last-Event-ID to another
instance; the server's shutdown then has nothing to wait for.

Only a server's handler is chained (uvicorn installs its own before the lifespan
starts): in-process tests, with the default handlers, install nothing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownNotice:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """From the lifespan's startup, on the event loop that serves the requests."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; tests' portal threads land here
        loop = asyncio.get_running_loop()

        def chained(previous: Any) -> Any:
            def handler(signum: int, frame: FrameType | None) -> None:
                loop.call_soon_threadsafe(self.stopping.set)
                previous(signum, frame)
            return handler

        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous) and previous is not signal.default_int_handler:
                self._previous[sig] = previous
                signal.signal(sig, chained(previous))

    def uninstall(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
        self._previous.clear()


__all__ = ["ShutdownNotice"]
