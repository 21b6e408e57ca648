"""The jobs running in this worker process, for the threads that must reach them: the
heartbeat renews their leases, the cancel listener stops them."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from workers.runtimes.base import JobSpec


class Run(Protocol):
    """What the supervisor needs of a running job (workers.lifecycle.JobRun)."""

    spec: JobSpec

    def should_stop(self) -> bool: ...

    def stop(self, reason: str) -> None: ...


# How long a cancel for a job not running here is kept for a run about to register.
EARLY_CANCEL_S = 60.0


class RunRegistry:
    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._early: dict[str, float] = {}  # job id -> when its cancel came (monotonic)
        self._lock = threading.Lock()

    def add(self, run: Run) -> bool:
        """From now on a cancel message stops `run`. True when one came before: a job
        is only cancelled while running, so after its claim, and the message can
        reach the cancel listener before its run registers here."""
        with self._lock:
            self._runs[run.spec.id] = run
            return self._early.pop(run.spec.id, None) is not None

    def cancel(self, job_id: str) -> Run | None:
        """A cancel message: the job's run, or None, and then the cancel is kept for a
        run of it that registers within EARLY_CANCEL_S (every worker hears every
        cancel, so most are for jobs that run elsewhere)."""
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(job_id)
            if run is None:
                if len(self._early) > 1000:
                    self._early = {j: t for j, t in self._early.items()
                                   if now - t < EARLY_CANCEL_S}
                self._early[job_id] = now
            return run

    def remove(self, run: Run) -> None:
        # Only this run: a newer attempt of the same job may have taken its place.
        with self._lock:
            if self._runs.get(run.spec.id) is run:
                del self._runs[run.spec.id]

    def get(self, job_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(job_id)

    def active(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())
