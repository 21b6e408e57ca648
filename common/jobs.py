"""The job contract between api and workers: statuses, transitions, the envelope.

Every status change in the system is one conditional UPDATE built here by
`transition()`, so the rules (which status may follow which, and the attempt
fence on a running job's writes) live in one place. The caller publishes the
event that goes with it (`EVENT_FOR`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Update, update

from common.db import Job


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


S = JobStatus
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED})
ACTIVE = frozenset({S.RUNNING, S.CANCELLING})

# to-status -> the statuses it may come from. RUNNING/CANCELLING -> QUEUED is the
# requeue of a job whose worker lost its lease.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    S.RUNNING: frozenset({S.QUEUED}),
    S.CANCELLING: frozenset({S.RUNNING}),
    S.QUEUED: ACTIVE,
    S.SUCCEEDED: ACTIVE,
    S.FAILED: ACTIVE | {S.QUEUED},
    S.CANCELLED: ACTIVE | {S.QUEUED},
    S.EXPIRED: frozenset({S.QUEUED}),
}


def transition(
    job_id: str,
    to: JobStatus,
    *,
    expect: frozenset[JobStatus] | set[JobStatus] | None = None,
    attempt: int | None = None,
    **values,
) -> Update:
    """The UPDATE for one status change; it matches no row when the change is not allowed.

    `attempt` fences a running job's writes: only the attempt that holds the job may
    finish it, so a duplicate or late delivery never overwrites a result.
    """
    sources = ALLOWED_FROM[to] if expect is None else frozenset(expect) & ALLOWED_FROM[to]
    stmt = update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in sources]))
    if attempt is not None:
        stmt = stmt.where(Job.attempts == attempt)
    return stmt.values(status=to.value, **values).execution_options(synchronize_session=False)


# Every column of a job, labelled with Job's attribute names: a Core row of these
# (`.returning(*JOB_COLUMNS)`) reads like a Job, without the ORM's per-row cost.
JOB_COLUMNS = tuple(col.label(attr.key) for attr in Job.__mapper__.column_attrs
                    for col in attr.columns)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def envelope(job) -> dict:
    """The job as clients see it (GET /v1/jobs/{id} and the `done` event): from a Job
    or a row of JOB_COLUMNS."""
    return {
        "id": job.id,
        "object": "job",
        "kind": job.kind,
        "model": job.model,
        "status": job.status,
        "priority": job.priority,
        "queue": job.queue,
        "input": job.input,
        "params": job.params,
        "output": job.output,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "start_by": _iso(job.start_by),
        "timeout_s": job.timeout_s,
        "metadata": job.metadata_ or {},
        "metrics": job.metrics or {},
        "batch_id": job.batch_id,
    }
