"""Cross-cutting observers of a worker's jobs (metrics), called by the lifecycle."""

from __future__ import annotations

from workers.runtimes.base import JobSpec


class Hooks:
    """The default observes nothing; workers.metrics.MetricsHooks counts."""

    def finished(self, spec: JobSpec, envelope: dict) -> None: ...

    def retried(self, spec: JobSpec, error_type: str) -> None: ...
