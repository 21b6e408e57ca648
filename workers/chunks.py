"""A chunk of batch lines on a worker: one task message, one claim, bulk finishes.

Why: a batch line of a model that costs almost nothing (debug/echo) or that batches
(local embeddings) used to spend far more on its own message, claim, finish and event
stream than on the model. A chunk's lines are claimed in one statement
(`JobStore.claim_many`), run without token events (nobody follows a line live; a
batch is watched through its progress), embedded in as few forward passes as the
executor allows (every line's texts are handed over before the first is awaited), and
their ends written in bulk (`JobStore.finish_many`) at most `FLUSH_S` after they end
(a timer writes them when no later line ends in time) and at the end, so the batch's
progress advances within a chunk too.

Each line is still a job of its own: its run sits in the registry, so the heartbeat
renews its lease and a cancel (the line's, or its batch's) stops it; every end is
fenced by the line's attempt. A worker killed mid-chunk leaves its unfinished lines
running under leases that lapse: the reconciler requeues them and sends them again,
one message each. A duplicate delivery of the chunk claims nothing and writes nothing.
A worker that drains (workers/drain.py) hands the lines it did not finish back to the
queue and the chunk's message with them: its next delivery claims just those.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import redis
from sqlalchemy import bindparam, select
from sqlalchemy.exc import SQLAlchemyError

from common.constants import CONTROL_CHANNEL
from common.db import Job
from common.jobs import JobStatus
from common.store import End
from workers.drain import HANDED_BACK_REASON, HandedBack
from workers.lifecycle import HAND_BACK, JobRun, Outcome, claim_of, failed_end, settled_end
from workers.runtimes.base import EmbedResult, GenerateResult
from workers.worker import Worker

log = logging.getLogger("monkey.worker")

FLUSH_S = 0.25  # finished lines wait at most this long for their bulk write
_ACTIVE_LINE = (select(Job.id).where(Job.batch_id == bindparam("batch_id"),
                                     Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING,
                                                     JobStatus.CANCELLING]))
                .limit(1))


class LineRun(JobRun):
    """A chunk line's RunContext: tokens are counted, not streamed."""

    def token(self, text: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.tokens += 1

    def restart(self, reason: str) -> None:
        self.tokens = 0

    def progress(self, **data) -> None:
        pass


class Ends:
    """Finished lines waiting for their bulk write: written when a line ends FLUSH_S
    after the last write, else by a timer, so lines that end before a slow one do not
    wait for it (the timer's thread and the chunk's share the lock)."""

    def __init__(self, state: Worker):
        self.state = state
        self.pending: list[tuple[LineRun, End]] = []
        self.handed: list[LineRun] = []  # stopped by the drain before their work was whole
        self.flushed_at = time.monotonic()
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None

    def add(self, run: LineRun, outcome: Outcome | None,
            result: GenerateResult | EmbedResult | None = None) -> None:
        # The line is over here: the heartbeat no longer renews its lease (its row is
        # about to leave `running`) and a cancel has nothing left to stop.
        self.state.runs.remove(run)
        run.close()
        with self._lock:
            if outcome is HAND_BACK:
                self.handed.append(run)
            elif outcome is not None:  # None: the lease was lost, another attempt owns it
                self.pending.append((run, End(run.spec.id, run.spec.attempt, outcome.to,
                                              outcome.output, outcome.error,
                                              run.metrics(result))))
            wait_s = FLUSH_S - (time.monotonic() - self.flushed_at)
            if wait_s <= 0:
                self.flush()
            elif self.pending and self._timer is None:
                self._timer = threading.Timer(wait_s, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the lines stay pending: the chunk's own flush tries again
            log.warning("chunk lines not written yet: %s", exc)

    def flush(self) -> None:
        with self._lock:
            self.close()
            self.flushed_at = time.monotonic()
            if not self.pending:
                return
            pending, self.pending = self.pending, []
            try:
                ends = self.state.store.finish_many([e for _, e in pending])
            except BaseException:
                self.pending[:0] = pending
                raise
            envs = {env["id"]: env for env in ends}
            for run, _ in pending:
                env = envs.get(run.spec.id)
                if env is not None:
                    self.state.hooks.finished(run.spec, env)
        statuses = Counter(str(env["status"]) for env in envs.values())
        log.info("chunk lines finished", extra={
            "lines": len(pending), "discarded": len(pending) - len(envs), **statuses})

    def close(self) -> None:
        """No timed write after this (a write under way ends first: it holds the lock)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def hand_back(self) -> None:
        """The lines the drain stopped go back to the queue (HandedBack: the chunk's
        message is requeued with them); one a cancel reached first ends cancelled."""
        released, cancelled = 0, []
        for run in self.handed:
            spec = run.spec
            if self.state.store.release(spec.id, attempt=spec.attempt,
                                        reason=HANDED_BACK_REASON):
                released += 1
            else:
                cancelled.append(End(spec.id, spec.attempt, JobStatus.CANCELLED,
                                     metrics=run.metrics(None)))
        self.state.store.finish_many(cancelled)
        if released:
            log.info("chunk lines handed back", extra={"lines": released})
            raise HandedBack(f"{released} lines")


def execute(state: Worker, job_ids: list[str]) -> None:
    """Run one delivered chunk: claim its queued lines, run them, write their ends."""
    try:
        with state.drain.task():  # the message goes back if the worker is draining
            _execute(state, job_ids)
    finally:
        for job_id in job_ids:
            state.supervisor.release(job_id)


def _execute(state: Worker, job_ids: list[str]) -> None:
    rows = state.store.claim_many(job_ids, worker_id=state.worker_id)
    if not rows:
        return
    runs = [LineRun(state, claim_of(row)) for row in rows]
    for run in runs:
        state.runs.add(run)
    ends = Ends(state)
    try:
        embed = [r for r in runs if r.spec.kind == "embed"]
        _embed(state, embed, ends)
        _generate(state, [r for r in runs if r.spec.kind != "embed"], ends)
        ends.flush()
        ends.hand_back()
    finally:
        ends.close()
        for run in runs:
            state.runs.remove(run)
            run.close()
    for batch_id in {row.batch_id for row in rows if row.batch_id}:
        _kick_if_done(state, batch_id)


def _kick_if_done(state: Worker, batch_id: str) -> None:
    """The chunk that leaves its batch with no active line asks the control processes
    to finalize it now rather than at the reconciler's next pass (one index probe per
    chunk). Of two chunks ending together, the later look sees both ends."""
    try:
        with state.autocommit.connect() as conn:
            if conn.execute(_ACTIVE_LINE, {"batch_id": batch_id}).first() is not None:
                return
        state.redis.publish(CONTROL_CHANNEL, "batches")
    except (SQLAlchemyError, redis.RedisError) as exc:  # the reconciler's pass does it
        log.warning("batch %s: control not kicked: %s", batch_id, exc)


def _stopped(run: LineRun, ends: Ends) -> bool:
    """A line stopped before its turn (cancelled with its batch, lease lost) ends now."""
    if not run.should_stop():
        return False
    ends.add(run, failed_end(run, RuntimeError("stopped before it started")))
    return True


def _generate(state: Worker, runs: list[LineRun], ends: Ends) -> None:
    for run in runs:
        if _stopped(run, ends):
            continue
        run.started = time.monotonic()
        try:
            result = state.runtime_for(run.spec.model).generate(run.spec, run)
        except Exception as exc:  # that line ends with it; the chunk goes on
            ends.add(run, failed_end(run, exc))
            continue
        ends.add(run, settled_end(run, result), result)


def _embed(state: Worker, runs: list[LineRun], ends: Ends) -> None:
    live = [r for r in runs if not _stopped(r, ends)]
    if not live:
        return
    started = time.monotonic()
    for run in live:
        run.started = started
    try:
        results = state.runtime_for(live[0].spec.model).embed_many(
            [(run.spec, run) for run in live])
    except Exception as exc:  # the model is not there: every line ends with it
        results = [exc] * len(live)
    for run, result in zip(live, results, strict=True):
        if isinstance(result, Exception):
            ends.add(run, failed_end(run, result))
        else:
            ends.add(run, settled_end(run, result), result)


__all__ = ["execute"]
