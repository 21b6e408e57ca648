"""A job's life on a worker: claim, run, finish. Owns every worker-side transition.

claim:  queued -> running (attempts + 1, lease taken) or queued -> expired (start_by)
finish: running|cancelling -> succeeded | failed | cancelled, fenced by the attempt
Each transition is a conditional UPDATE from common.jobs and publishes its event here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Update, bindparam, or_

from common.constants import CANCEL_KEY
from common.db import Job, utcnow
from common.errors import JobError, JobTimeout
from common.jobs import JOB_COLUMNS, JobStatus, envelope, transition
from workers.runtimes.base import EmbedResult, GenerateResult, JobSpec
from workers.runtimes.stopping import StopSignal
from workers.worker import Worker, retry_writes

log = logging.getLogger("monkey.worker")
S = JobStatus


# The two statements every job runs, built once: a statement built per call costs
# more in SQLAlchemy than its round trip to the database.
_CLAIM = (
    transition(bindparam("job_id"), S.RUNNING, attempts=Job.attempts + 1,
               started_at=bindparam("now"), lease_expires_at=bindparam("lease"),
               worker_id=bindparam("worker_id"))
    .where(or_(Job.start_by.is_(None), Job.start_by >= bindparam("now")))
    .returning(*JOB_COLUMNS)
)


@functools.cache
def _finish_statement(to: JobStatus) -> Update:
    return transition(
        bindparam("job_id"), to, attempt=bindparam("attempt"), output=bindparam("output"),
        error=bindparam("error"), metrics=bindparam("metrics"),
        finished_at=bindparam("now"), lease_expires_at=None,
    ).returning(*JOB_COLUMNS)


@dataclass
class Claim:
    spec: JobSpec
    queue_ms: float
    priority: str = "interactive"
    claimed_at: float = field(default_factory=time.monotonic)


def claim(state: Worker, job_id: str) -> Claim | None:
    """Take a queued job for this worker, or None if it is not ours to run."""

    def attempt() -> tuple[Claim | None, dict | None]:
        with state.autocommit.connect() as conn:
            now = utcnow()
            lease = now + timedelta(seconds=state.settings.lease_s)
            # One statement (autocommit: one round trip): only a queued job within its
            # start_by moves to running, so of two deliveries exactly one wins.
            job = conn.execute(_CLAIM, {"job_id": job_id, "now": now, "lease": lease,
                                        "worker_id": state.worker_id}).first()
            if job is not None:
                spec = JobSpec(
                    id=job.id, kind=job.kind, model=job.model, input=job.input,
                    params=job.params, attempt=job.attempts, timeout_s=job.timeout_s,
                )
                queue_ms = (now - job.created_at).total_seconds() * 1000
                return Claim(spec, queue_ms, job.priority), None
            # Not ours (a duplicate or late delivery), or queued past its start_by.
            err = {"type": "expired", "message": "start_by passed before a worker took it"}
            expired = conn.execute(
                transition(job_id, S.EXPIRED, finished_at=now, error=err)
                .where(Job.start_by < now).returning(*JOB_COLUMNS)
            ).first()
            return None, (envelope(expired) if expired is not None else None)

    got, expired = retry_writes(state, attempt)
    if expired is not None:
        state.events.emit_many(job_id, [("status", {"status": S.EXPIRED}), ("done", expired)],
                               final=True)
    if got is not None:
        log.info("job started", extra={"job_id": job_id, "attempt": got.spec.attempt,
                                       "model": got.spec.model, "queue_ms": round(got.queue_ms)})
    return got


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
        self.state.events.token(self.spec.id, text, self.tokens)
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
        m = {"queue_ms": round(self.claim.queue_ms, 1), "run_ms": round(run_s * 1000, 1)}
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
    """Write the attempt's end, fenced by its attempt number; publish status and done."""
    spec = run.spec
    metrics = run.metrics(result)

    def write() -> dict | None:
        with run.state.autocommit.connect() as conn:
            job = conn.execute(_finish_statement(to), {
                "job_id": spec.id, "attempt": spec.attempt, "output": output, "error": error,
                "metrics": metrics, "now": utcnow(),
            }).first()
            return envelope(job) if job is not None else None

    env = retry_writes(run.state, write)
    if env is None:
        log.warning("result discarded: attempt no longer holds the job",
                    extra={"job_id": spec.id, "attempt": spec.attempt})
        return False
    settings = run.state.settings
    ttl = settings.batch_events_ttl_s if run.claim.priority == "batch" else settings.events_ttl_s
    run.state.events.emit_many(spec.id, [("status", {"status": to}), ("done", env)],
                               final=True, ttl_s=ttl)
    run.state.hooks.finished(spec, env)
    log.info("job finished", extra={"job_id": spec.id, "attempt": spec.attempt,
                                    "model": spec.model, "status": str(to), **metrics})
    return True


def execute(state: Worker, job_id: str) -> None:
    """Run one delivered task: claim the job, run it on its runtime, write the end."""
    try:
        _execute(state, job_id)
    finally:
        state.supervisor.release(job_id)


def _execute(state: Worker, job_id: str) -> None:
    got = claim(state, job_id)
    if got is None:
        return
    run = JobRun(state, got)
    state.runs.add(run)
    started = {"status": S.RUNNING, "attempt": got.spec.attempt}
    if got.spec.attempt > 1:
        started["restarted"] = True  # clients drop the text of the lost attempt
    # The running event and a look for a cancel that came before the run was
    # registered (the pub/sub listener catches every later one): one round trip.
    replies = state.events.emit_many(
        job_id, [("status", started)],
        extra=lambda pipe: pipe.exists(CANCEL_KEY.format(job_id=job_id)))
    if replies and replies[0]:
        run.stop("cancelled")
    try:
        _run_claimed(state, run)
    finally:
        state.runs.remove(run)
        run.close()


def _run_claimed(state: Worker, run: JobRun) -> None:
    spec = run.spec
    try:
        runtime = state.runtime_for(spec.model)
        result = runtime.embed(spec, run) if spec.kind == "embed" else runtime.generate(spec, run)
    except Exception as exc:  # every failure ends the job; its cause goes to the log
        reason = run.stop_reason()
        if reason == "lease_lost":
            return
        if reason == "cancelled":
            finish(run, S.CANCELLED, output=None)
            return
        if reason == "timeout" and not isinstance(exc, JobError):
            exc = JobTimeout(f"job exceeded its timeout of {spec.timeout_s:g}s")
        if not isinstance(exc, JobError):
            log.exception("job failed", extra={"job_id": spec.id, "attempt": spec.attempt})
            err = {"type": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        else:
            err = exc.as_dict()
        state.events.emit(spec.id, "error", err)
        finish(run, S.FAILED, error=err)
        return
    _settle(run, result)


def _settle(run: JobRun, result: GenerateResult | EmbedResult) -> None:
    reason = run.stop_reason()
    if reason == "lease_lost":
        return  # another attempt owns the job now; our write would be refused anyway
    if reason == "timeout":
        err = JobTimeout(f"job exceeded its timeout of {run.spec.timeout_s:g}s").as_dict()
        run.state.events.emit(run.spec.id, "error", err)
        finish(run, S.FAILED, error=err, output=output_of(result, "cancelled"), result=result)
    elif reason == "cancelled":
        finish(run, S.CANCELLED, output=output_of(result, "cancelled"), result=result)
    else:
        finish(run, S.SUCCEEDED, output=output_of(result), result=result)
