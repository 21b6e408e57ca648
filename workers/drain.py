"""Graceful drain: what a worker does between SIGTERM and its exit.

Platforms stop a service with SIGTERM and SIGKILL it after a grace period (compose's
`stop_grace_period`, Railway's `RAILWAY_DEPLOYMENT_DRAINING_SECONDS`). Celery's own warm
shutdown waits for every running task however long it takes, so a worker in the middle
of a long generation was SIGKILLed, and its jobs waited for their lease to lapse. Here,
within `MONKEY_DRAIN_S` of the signal:

1. the worker stops taking messages (its task consumer is cancelled at once, in the
   signal handler, as Celery's cold shutdown does); a task that starts from then on
   hands its message back unrun;
2. running jobs get most of the window to finish (all of it but `reserve_s`);
3. the rest are stopped with the reason DRAIN: the lifecycle releases each job through
   the job store (running -> queued, fenced by its attempt) and raises HandedBack, which
   becomes Celery's `Reject(requeue=True)`: the message goes back on its queue at once,
   for another worker, instead of waiting in kombu's `unacked` hash;
4. Celery's warm shutdown, which ran meanwhile, finds no task left and exits 0. The
   process then ends with `os._exit`: once Celery and the Worker closed their
   connections nothing is left to clean up, and the interpreter's own teardown of
   Celery, SQLAlchemy and their kind took about a second of the window (measured on
   the 2-core test machine under load).

A task runs inside `Drain.task()`, which counts it, so step 3 also catches a task that
was past the door when the drain began and claims its job late.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from celery import signals
from celery.exceptions import Reject

from workers.runs import RunRegistry

log = logging.getLogger("monkey.worker")

DRAIN = "drain"  # the stop reason of a run handed back because its worker shuts down
HANDED_BACK_REASON = "worker shutting down"  # the reason in the job's `queued` event
_TICK_S = 0.05


class HandedBack(Exception):
    """A run stopped by the drain whose job went back to the queue: its task message
    must be requeued, not acknowledged."""


class Drain:
    def __init__(self, runs: RunRegistry, *, drain_s: float):
        self.runs = runs
        self.drain_s = drain_s
        # What the window keeps for handing back and exiting once runs are stopped.
        self.reserve_s = min(2.0, drain_s / 4)
        self.draining = threading.Event()
        self.done = threading.Event()
        self._tasks = 0  # task bodies inside task()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def task(self) -> Iterator[None]:
        """Around one task body. Raises Reject(requeue=True) when the message must go
        back to its queue: the drain began before the task started, or it stopped the
        task's run (HandedBack)."""
        with self._cond:
            if self.draining.is_set():
                raise Reject(HANDED_BACK_REASON, requeue=True)
            self._tasks += 1
        try:
            yield
        except HandedBack as exc:
            raise Reject(HANDED_BACK_REASON, requeue=True) from exc
        finally:
            with self._cond:
                self._tasks -= 1
                self._cond.notify_all()

    def begin(self, stop_consuming: Callable[[], Any] | None = None) -> None:
        """Start draining (once); returns at once. `stop_consuming` cancels the task
        consumer: it must run on the thread that owns the broker connection (Celery's
        main thread, where the signal handler runs)."""
        with self._cond:
            if self.draining.is_set():
                return
            self.draining.set()
        started = time.monotonic()
        if stop_consuming is not None:
            try:
                stop_consuming()
            except Exception:  # noqa: BLE001 - the drain goes on; Celery stops consuming too
                log.exception("could not cancel the task consumer")
        self._thread = threading.Thread(target=self._run, args=(started,), name="drain",
                                        daemon=True)
        self._thread.start()

    def _busy(self) -> bool:
        return bool(self._tasks or self.runs.active())

    def _run(self, started: float) -> None:
        hand_back_at = started + self.drain_s - self.reserve_s
        give_up_at = started + self.drain_s
        n = len(self.runs.active())
        log.info("draining: %d job(s) running, %.1fs to finish", n, hand_back_at - started)
        with self._cond:
            while self._busy() and time.monotonic() < hand_back_at:
                self._cond.wait(_TICK_S)
        stopped: set[int] = set()
        with self._cond:
            # A task past the door when the drain began may register its run late.
            while self._busy() and time.monotonic() < give_up_at:
                for run in self.runs.active():
                    if id(run) not in stopped:
                        stopped.add(id(run))
                        run.stop(DRAIN)
                self._cond.wait(_TICK_S)
            left = self._tasks
        took = time.monotonic() - started
        if left:
            log.error("drain window of %.1fs over with %d task(s) still running: the "
                      "platform's SIGKILL ends them; their leases requeue the jobs",
                      self.drain_s, left)
        log.info("drained in %.2fs: %d job(s) finished, %d handed back",
                 took, max(n - len(stopped), 0), len(stopped))
        self.done.set()


def install(drain_of: Callable[[], Drain | None]) -> None:
    """Drain on Celery's warm shutdown (SIGTERM, or a first Ctrl-C): Celery calls
    `worker_shutting_down` from its signal handler, on the main thread, before it stops
    the consumer and joins the pool."""
    consumers: list[Any] = []

    @signals.worker_ready.connect(weak=False)
    def _ready(sender: Any = None, **_kw: Any) -> None:
        consumers.append(sender)  # the worker's Consumer

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(**_kw: Any) -> None:
        drain = drain_of()
        if drain is None:
            return

        def stop_consuming() -> None:
            task_consumer = consumers[-1].task_consumer if consumers else None
            if task_consumer is not None:
                task_consumer.cancel()

        drain.begin(stop_consuming)


def exit_process(code: int | None) -> NoReturn:
    """End the worker process once Celery returned: logs flushed, no interpreter
    teardown (see above). A Celery exit code other than 0 is kept, so a worker that
    failed is restarted by its platform."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


__all__ = ["DRAIN", "HANDED_BACK_REASON", "Drain", "HandedBack", "exit_process", "install"]
