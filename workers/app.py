"""The worker: our Celery app plus task bodies, and the process setup around them.

`monkey worker --queues Q` runs Celery's threads pool (no fork, so no fork after CUDA
starts): models load once in this process before it consumes its first task.
"""

from __future__ import annotations

import logging
import os

from celery import Celery, signals

from common.celery_app import make_celery
from common.constants import LOCAL_PREFIX, QUEUE_GPU, TASK_EMBED, TASK_GENERATE
from common.settings import Settings
from workers import lifecycle
from workers.compat.celery_consumer import CONSUMER
from workers.state import Hooks, WorkerState

log = logging.getLogger("monkey.worker")

_state: WorkerState | None = None


def current_state() -> WorkerState:
    if _state is None:
        raise RuntimeError("the worker process state is not set up (start it with monkey worker)")
    return _state


def make_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings)
    app.conf.worker_consumer = CONSUMER  # task events in batches

    @app.task(name=TASK_GENERATE, ignore_result=True)
    def generate(job_id: str, model: str | None = None) -> None:
        lifecycle.execute(current_state(), job_id)

    @app.task(name=TASK_EMBED, ignore_result=True)
    def embed(job_id: str, model: str | None = None) -> None:
        lifecycle.execute(current_state(), job_id)

    return app


def setup_process(settings: Settings, queues: list[str], hooks: Hooks | None = None) -> WorkerState:
    """Open connections, load the models this worker serves, start the supervisor."""
    global _state
    from workers import metrics

    hooks = hooks or metrics.MetricsHooks(queues[0] if len(queues) == 1 else "+".join(queues))
    state = WorkerState(settings, queues=queues, hooks=hooks)
    if QUEUE_GPU in queues:
        # Load every local model before taking a task: readiness waits for it.
        state.runtime_for(f"{LOCAL_PREFIX}/*")
    metrics.serve(settings.metrics_port)
    state.supervisor.start()
    state.supervisor.ready = True
    state.supervisor.beat()
    _state = state
    return state


def run_worker(settings: Settings, *, queues: list[str], concurrency: int,
               loglevel: str = "INFO", hooks: Hooks | None = None) -> None:
    app = make_worker_app(settings)

    @signals.worker_init.connect(weak=False)
    def _init(**_kw) -> None:
        setup_process(settings, queues, hooks)

    @signals.task_received.connect(weak=False)
    def _received(request=None, **_kw) -> None:
        if _state is not None and request is not None and request.args:
            _state.supervisor.hold(request.args[0])

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_kw) -> None:
        if _state is not None:
            _state.close()

    name = f"{'+'.join(queues)}-{os.getpid()}@%h"
    app.worker_main([
        "worker", "--queues", ",".join(queues), "--pool", "threads",
        "--concurrency", str(concurrency), "--hostname", name, "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--task-events",
    ])
