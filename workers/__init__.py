"""The worker process: `run_worker(settings, queues=...)` (what `monkey worker` runs),
`make_worker_app(settings)` (the Celery app with our tasks), and the `Worker` that
owns the process's state.

Imported on first use (PEP 562): `import workers.runtimes.local.tiny` does not import
Celery.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from workers.app import make_worker_app, run_worker
    from workers.worker import Worker

__all__ = ["Worker", "make_worker_app", "run_worker"]

_SOURCES = {"Worker": "workers.worker", "make_worker_app": "workers.app",
            "run_worker": "workers.app"}


__getattr__ = _lazy_exports(__name__, _SOURCES)
