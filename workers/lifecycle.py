"""A job's life on a worker: claim it, run it on its runtime, finish it.

The status changes themselves (claim, finish, release, with their events) are the
job store's (common.store); this module turns a claimed row into a run of a runtime
and the run's outcome into the end to write. A run that the worker's drain stopped
(workers/drain.py) gives its job back to the queue instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from common.errors import JobError, JobTimeout
from common.jobs import JobStatus
from workers.drain import DRAIN, HANDED_BACK_REASON, HandedBack
from workers.runtimes.base import EmbedResult, GenerateResult, JobSpec
from workers.runtimes.stopping import StopSignal
from workers.worker import Worker

log = logging.getLogger("monkey.worker")
S = JobStatus


@dataclass
class Claim:
    spec: JobSpec
    queue_ms: float
    priority: str = "interactive"
    claimed_at: float = field(default_factory=time.monotonic)


def claim(state: Worker, job_id: str) -> Claim | None:
    """Take a queued job for this worker, or None if it is not ours to run (the store
    expires it when its start_by passed)."""
    got = state.store.claim(job_id, worker_id=state.worker_id)
    if got is None:
        return None
    claim_ = claim_of(got)
    log.info("job started", extra={"job_id": job_id, "attempt": claim_.spec.attempt,
                                   "model": claim_.spec.model,
                                   "queue_ms": round(claim_.queue_ms)})
    return claim_


def claim_of(job) -> Claim:
    """The Claim of a claimed row of JOB_COLUMNS."""
    spec = JobSpec(id=job.id, kind=job.kind, model=job.model, input=job.input,
                   params=job.params, attempt=job.attempts, timeout_s=job.timeout_s)
    queue_ms = (job.started_at - job.created_at).total_seconds() * 1000
    return Claim(spec, queue_ms, job.priority)


class JobRun(StopSignal):
    """The RunContext of one claimed job (see workers.runtimes.base.RunContext)."""

    def __init__(self, state: Worker, claim_: Claim):
        super().__init__()
        self.state = state
        self.claim = claim_
        self.spec = claim_.spec
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.tokens = 0
        self.retries = 0
        self._timer: threading.Timer | None = None
        if self.spec.timeout_s:
            self._timer = threading.Timer(self.spec.timeout_s, self.stop, args=("timeout",))
            self._timer.daemon = True
            self._timer.start()

    # RunContext (stopping comes from StopSignal) ------------------------------------
    def token(self, text: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.state.events.token(self.spec.id, text, self.tokens, self.spec.attempt)
        self.tokens += 1

    def restart(self, reason: str) -> None:
        self.tokens = 0
        self.state.events.emit(
            self.spec.id, "status", {"status": S.RUNNING, "restarted": True, "reason": reason}
        )

    def progress(self, **data) -> None:
        self.state.events.emit(self.spec.id, "progress", data)

    def count_retry(self, error_type: str) -> None:
        self.retries += 1
        self.state.hooks.retried(self.spec, error_type)

    # Lifecycle side -------------------------------------------------------------
    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def metrics(self, result: GenerateResult | EmbedResult | None) -> dict:
        run_s = time.monotonic() - self.started
        m: dict[str, float | None] = {"queue_ms": round(self.claim.queue_ms, 1),
                                      "run_ms": round(run_s * 1000, 1)}
        if self.retries:
            m["retries"] = self.retries
        if self.spec.kind == "generate":
            completion = result.completion_tokens if isinstance(result, GenerateResult) else 0
            ttft = (self.first_token_at - self.started) * 1000 if self.first_token_at else None
            m.update(
                ttft_ms=round(ttft, 1) if ttft is not None else None,
                prompt_tokens=result.prompt_tokens if result else 0,
                completion_tokens=completion,
                tokens_per_s=round(completion / run_s, 2) if run_s > 0 and completion else 0.0,
            )
        elif isinstance(result, EmbedResult):
            m["prompt_tokens"] = result.prompt_tokens
        return m


def output_of(result: GenerateResult | EmbedResult, finish_reason: str | None = None) -> dict:
    if isinstance(result, EmbedResult):
        return {"embeddings": result.embeddings, "dim": result.dim}
    return {
        "text": result.text,
        "finish_reason": finish_reason or result.finish_reason,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }


def finish(run: JobRun, to: JobStatus, *, output: dict | None = None, error: dict | None = None,
           result=None) -> bool:
    """Write the attempt's end through the store (fenced by its attempt number)."""
    spec = run.spec
    metrics = run.metrics(result)
    env = run.state.store.finish(spec.id, attempt=spec.attempt, to=to, output=output,
                                 error=error, metrics=metrics)
    if env is None:
        log.warning("result discarded: attempt no longer holds the job",
                    extra={"job_id": spec.id, "attempt": spec.attempt})
        return False
    run.state.hooks.finished(spec, env)
    log.info("job finished", extra={"job_id": spec.id, "attempt": spec.attempt,
                                    "model": spec.model, "status": str(to), **metrics})
    return True


def hand_back(run: JobRun) -> None:
    """The drain stopped this run: its job goes back to the queue, its partial output
    dropped (the next attempt's `running` event says `restarted`). Raises HandedBack,
    so that the task's message is requeued."""
    spec = run.spec
    if run.state.store.release(spec.id, attempt=spec.attempt, reason=HANDED_BACK_REASON):
        log.info("job handed back", extra={"job_id": spec.id, "attempt": spec.attempt})
        raise HandedBack(spec.id)
    # A cancel reached the job first (it is `cancelling`): its work has stopped.
    finish(run, S.CANCELLED)


def execute(state: Worker, job_id: str) -> None:
    """Run one delivered task: claim the job, run it on its runtime, write the end."""
    try:
        with state.drain.task():  # the message goes back if the worker is draining
            _execute(state, job_id)
    finally:
        state.supervisor.release(job_id)


def _execute(state: Worker, job_id: str) -> None:
    got = claim(state, job_id)
    if got is None:
        return
    run = JobRun(state, got)
    if state.runs.add(run):  # cancelled between the claim and now
        run.stop("cancelled")
    try:
        _run_claimed(state, run)
    finally:
        state.runs.remove(run)
        run.close()


def _run_claimed(state: Worker, run: JobRun) -> None:
    spec = run.spec
    result: GenerateResult | EmbedResult | None = None
    try:
        runtime = state.runtime_for(spec.model)
        result = runtime.embed(spec, run) if spec.kind == "embed" else runtime.generate(spec, run)
        end = settled_end(run, result)
    except Exception as exc:  # every failure ends the job; its cause goes to the log
        end = failed_end(run, exc)
    if end is HAND_BACK:
        hand_back(run)
    elif end is not None:
        finish(run, end.to, output=end.output, error=end.error, result=result)


@dataclass(frozen=True, slots=True)
class Outcome:
    to: JobStatus
    output: dict | None = None
    error: dict | None = None


# The drain stopped the run before its work was whole: its job goes back to the queue.
HAND_BACK = Outcome(S.QUEUED)


def failed_end(run: JobRun, exc: BaseException) -> Outcome | None:
    """How a run that raised ends; None when it lost its lease (nothing to write)."""
    spec = run.spec
    reason = run.stop_reason()
    if reason == "lease_lost":
        return None
    if reason == DRAIN:
        return HAND_BACK
    if reason == "cancelled":
        return Outcome(S.CANCELLED)
    if reason == "timeout" and not isinstance(exc, JobError):
        exc = JobTimeout(f"job exceeded its timeout of {spec.timeout_s:g}s")
    if not isinstance(exc, JobError):
        log.error("job failed", exc_info=exc,
                  extra={"job_id": spec.id, "attempt": spec.attempt})
        return Outcome(S.FAILED, error={"type": "internal_error",
                                        "message": f"{type(exc).__name__}: {exc}"})
    return Outcome(S.FAILED, error=exc.as_dict())


def settled_end(run: JobRun, result: GenerateResult | EmbedResult) -> Outcome | None:
    """How a run that returned ends; None when it lost its lease (another attempt owns
    the job now; our write would be refused anyway)."""
    reason = run.stop_reason()
    if reason == "lease_lost":
        return None
    if reason == DRAIN and getattr(result, "finish_reason", None) == "cancelled":
        return HAND_BACK  # a cut generation starts again elsewhere; a whole result is kept
    if reason == "timeout":
        err = JobTimeout(f"job exceeded its timeout of {run.spec.timeout_s:g}s").as_dict()
        return Outcome(S.FAILED, output_of(result, "cancelled"), err)
    if reason == "cancelled":
        return Outcome(S.CANCELLED, output_of(result, "cancelled"))
    return Outcome(S.SUCCEEDED, output_of(result))
