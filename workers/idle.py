"""`monkey worker --idle-exit S`: a worker that had nothing to do for S seconds exits 0.

This is how the ML service scales to zero (the seed's plan): an idle gpu worker still
holds its models' memory and, polling Redis, keeps its container busy, so a platform
that sleeps or removes idle containers (Railway's Serverless sleep, KEDA at zero) never
can. Idle means no job running and no task message held (received, not finished), both
known to the worker's own state; the check runs in its own thread.

The exit goes through the worker's own SIGTERM handling (Celery's warm shutdown, and
the drain of workers/drain.py where there is one), so a message that arrived between
the check and the signal is finished or handed back, never dropped.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger("monkey.worker")


def _terminate() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class IdleExit:
    def __init__(self, idle_s: float, *, busy: Callable[[], bool],
                 on_idle: Callable[[], None] = _terminate):
        self.idle_s = idle_s
        self.busy = busy
        self.on_idle = on_idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="idle-exit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        since = time.monotonic()
        step = min(max(self.idle_s / 4, 0.05), 1.0)
        while not self._stop.wait(step):
            if self.busy():
                since = time.monotonic()
            elif time.monotonic() - since >= self.idle_s:
                log.info("idle for %gs with nothing running or held: exiting", self.idle_s)
                self.on_idle()
                return


__all__ = ["IdleExit"]
