"""The jobs running in this worker process, for the threads that must reach them: the
heartbeat renews their leases, the cancel listener stops them."""

from __future__ import annotations

import threading
from typing import Protocol

from workers.runtimes.base import JobSpec


class Run(Protocol):
    """What the supervisor needs of a running job (workers.lifecycle.JobRun)."""

    spec: JobSpec

    def should_stop(self) -> bool: ...

    def stop(self, reason: str) -> None: ...


class RunRegistry:
    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def add(self, run: Run) -> None:
        """From now on a cancel message stops `run` (lifecycle looks for earlier ones)."""
        with self._lock:
            self._runs[run.spec.id] = run

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
