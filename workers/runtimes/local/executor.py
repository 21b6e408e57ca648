"""The part every batching executor shares: one thread per model, an inbox, forward accounting.

Task threads (Celery's threads pool) never touch the model: they hand a request to the
executor's inbox and wait on it. The executor thread is the only one that runs forward passes,
so each pass can carry the work of many jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from common.errors import ModelUnavailable
from workers.runtimes.local import metrics

log = logging.getLogger(__name__)

_CLOSE = object()


@dataclass
class ExecutorStats:
    """What the executor did, for tests and benchmarks (the metrics say the same to Prometheus)."""

    forwards: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    padded_tokens: list[int] = field(default_factory=list)  # rows x longest, per pass
    oom_splits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, rows: int) -> None:
        with self._lock:
            self.forwards += 1
            self.batch_sizes.append(rows)

    def record_tokens(self, padded: int) -> None:
        with self._lock:
            self.padded_tokens.append(padded)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "forwards": self.forwards,
                "batch_sizes": list(self.batch_sizes),
                "padded_tokens": list(self.padded_tokens),
                "oom_splits": self.oom_splits,
            }


class Request:
    """One job's hand-off to an executor; the task thread waits on `done`."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.submitted = time.monotonic()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if not self.done.is_set():
            self.error = exc
            self.done.set()


class BatchExecutor:
    kind = ""

    def __init__(self, name: str, device: str, *, max_batch: int, max_wait_ms: float):
        self.name = name
        self.device = device
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = ExecutorStats()
        #: test hook: forward passes over more rows than this raise torch.OutOfMemoryError, so the
        #: split-and-retry path runs on CPU exactly as it would on a full GPU
        self.simulate_oom_above: int | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"monkey-{self.kind}-{name}",
                                        daemon=True)

    # Task-thread side ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        self._inbox.put(_CLOSE)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def submit(self, request: Request) -> None:
        if not self.alive:
            raise ModelUnavailable(f"local/{self.name} is not running: {self._failure or 'closed'}")
        self._inbox.put(request)

    def wait(self, request: Request):
        # The executor always finishes a request (result, error or cancelled); the periodic
        # wake-up only notices an executor thread that died under it.
        while not request.done.wait(1.0):
            if not self._thread.is_alive():
                raise ModelUnavailable(f"local/{self.name} stopped: {self._failure}")
        if request.error is not None:
            raise request.error
        return request

    # Executor-thread side --------------------------------------------------------------
    def _main(self) -> None:
        try:
            with torch.inference_mode():
                self.run()
        except BaseException as exc:  # keep the cause for the task threads still waiting
            self._failure = exc
            log.exception("executor for local/%s died", self.name)
            self._fail_pending(ModelUnavailable(f"local/{self.name} failed: {exc}"))

    def run(self) -> None:  # pragma: no cover - every executor defines its loop
        raise NotImplementedError

    def _fail_pending(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Request):
                item.fail(exc)

    def _next(self, timeout: float | None):
        """The next request from the inbox (None when none came in time); stops on close."""
        try:
            if timeout is None:
                item = self._inbox.get()
            elif timeout <= 0:
                item = self._inbox.get_nowait()
            else:
                item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSE:
            self._closing = True
            return None
        return item

    def _forward(self, rows: int, fn, *, resident: int | None = None):
        """Run one forward pass over `rows` rows, with the OOM hook, metrics and stats.

        `resident`: rows whose state is in memory during the pass (a prefill's newcomers plus
        the running batch whose cache they join); the simulated OOM counts those."""
        held = rows if resident is None else resident
        if self.simulate_oom_above is not None and held > self.simulate_oom_above:
            raise torch.OutOfMemoryError(
                f"simulated: {held} rows > simulate_oom_above={self.simulate_oom_above}")
        started = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - started
        self.stats.record(rows)
        metrics.BATCH_SIZE.labels(self.name, self.kind).observe(rows)
        metrics.FORWARD_SECONDS.labels(self.name, self.kind).observe(elapsed)
        if self.device == "cuda":
            metrics.GPU_MEMORY_BYTES.labels("cuda", "allocated").set(torch.cuda.memory_allocated())
            metrics.GPU_MEMORY_BYTES.labels("cuda", "reserved").set(torch.cuda.memory_reserved())
        return out

    def _after_oom(self) -> None:
        with self.stats._lock:
            self.stats.oom_splits += 1
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _observe_wait(self, request: Request) -> None:
        metrics.QUEUE_WAIT_SECONDS.labels(self.name, self.kind).observe(
            time.monotonic() - request.submitted)
