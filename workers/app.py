"""The worker: our Celery app plus task bodies, and the process setup around them.

`monkey worker --queues Q` runs Celery's threads pool (no fork, so no fork after CUDA
starts): models load once in this process before it consumes its first task.

The process's `Worker` (workers/worker.py) is built at Celery's `worker_init` and hung
on the Celery app as `app.monkey_worker`; tasks are bound and reach it through
`self.app`, so no module holds it.
"""

from __future__ import annotations

import logging
import os
from typing import NoReturn

from celery import Celery, signals

from common.celery_app import make_celery
from common.constants import TASK_CHUNK, TASK_EMBED, TASK_GENERATE
from common.settings import Settings
from workers import chunks, drain, lifecycle, metrics
from workers.compat.celery_consumer import CONSUMER
from workers.hooks import Hooks
from workers.idle import IdleExit
from workers.worker import Worker

log = logging.getLogger("monkey.worker")


def worker_of(app: Celery) -> Worker:
    worker: Worker | None = getattr(app, "monkey_worker", None)
    if worker is None:
        raise RuntimeError("the worker process is not set up (start it with monkey worker)")
    return worker


def make_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings)
    app.conf.worker_consumer = CONSUMER  # task events in batches
    app.monkey_worker = None  # set at worker_init by start_worker

    @app.task(name=TASK_GENERATE, ignore_result=True, bind=True)
    def generate(self, job_id: str, model: str | None = None) -> None:
        lifecycle.execute(worker_of(self.app), job_id)

    @app.task(name=TASK_EMBED, ignore_result=True, bind=True)
    def embed(self, job_id: str, model: str | None = None) -> None:
        lifecycle.execute(worker_of(self.app), job_id)

    @app.task(name=TASK_CHUNK, ignore_result=True, bind=True)
    def chunk(self, job_ids: list[str], model: str | None = None) -> None:
        chunks.execute(worker_of(self.app), job_ids)

    return app


def start_worker(app: Celery, settings: Settings, queues: list[str],
                 hooks: Hooks | None = None, idle_exit_s: float | None = None) -> Worker:
    """Open connections, load the models this worker serves, start the supervisor, and
    hand the worker to `app`'s tasks. With `idle_exit_s`, the process exits 0 once it
    had nothing running or held for that long (workers/idle.py)."""
    hooks = hooks or metrics.MetricsHooks(queues[0] if len(queues) == 1 else "+".join(queues))
    worker = Worker(settings, queues=queues, hooks=hooks)
    metrics.serve(settings.metrics_port)
    worker.start()
    app.monkey_worker = worker
    if idle_exit_s is not None:
        IdleExit(idle_exit_s, busy=lambda: bool(worker.runs.active())
                 or worker.supervisor.holding() > 0).start()
    return worker


def run_worker(settings: Settings, *, queues: list[str], concurrency: int,
               loglevel: str = "INFO", hooks: Hooks | None = None,
               idle_exit_s: float | None = None) -> NoReturn:
    """Run the worker until it is stopped, then exit the process with Celery's exit
    code (workers/drain.py says why it exits at once)."""
    app = make_worker_app(settings)

    @signals.worker_init.connect(weak=False)
    def _init(**_kw) -> None:
        start_worker(app, settings, queues, hooks, idle_exit_s)

    @signals.task_received.connect(weak=False)
    def _received(request=None, **_kw) -> None:
        worker = app.monkey_worker
        if worker is not None and request is not None and request.args:
            held = request.args[0]  # a job id, or a chunk's list of them
            for job_id in held if isinstance(held, list) else [held]:
                worker.supervisor.hold(job_id)

    drain.install(lambda: app.monkey_worker.drain if app.monkey_worker else None)

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_kw) -> None:
        if app.monkey_worker is not None:
            app.monkey_worker.close()

    name = f"{'+'.join(queues)}-{os.getpid()}@%h"
    code = app.start([
        "worker", "--queues", ",".join(queues), "--pool", "threads",
        "--concurrency", str(concurrency), "--hostname", name, "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--task-events",
    ])
    drain.exit_process(code)
