"""The job contract between api and workers: statuses, transitions, the envelope.

Every status change in the system is one conditional UPDATE built here by
`transition()`, so the rules (which status may follow which, and the attempt
fence on a running job's writes) live in one place. Only the job store
(common.store) executes them, each with the event that goes with it.

Batch statuses (the OpenAI Batch API's) live here too, beside the job's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Row, Update, update

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

class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


B = BatchStatus
BATCH_TERMINAL = frozenset({B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED})
# Statuses in which some process still has work to do on the batch.
BATCH_WORKING = frozenset({B.VALIDATING, B.IN_PROGRESS, B.FINALIZING, B.CANCELLING})

# The error of a job whose start_by passed while it waited.
EXPIRED_ERROR = {"type": "expired", "message": "start_by passed before a worker took it"}
BATCH_CANCELLED_ERROR = {"type": "batch_cancelled",
                         "message": "the batch was cancelled before this ran"}

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
    job_id: Any,
    to: JobStatus,
    *,
    expect: frozenset[JobStatus] | set[JobStatus] | None = None,
    attempt: Any = None,
    where: Iterable[ColumnElement[bool]] = (),
    **values: Any,
) -> Update:
    """The UPDATE for a status change; it matches no row when the change is not allowed.

    `job_id` (a value or a bind parameter) names one job; None changes every job that
    `where` selects (bulk forms). `attempt` fences a running job's writes: only the
    attempt that holds the job may finish it, so a duplicate or late delivery never
    overwrites a result.
    """
    sources = ALLOWED_FROM[to] if expect is None else frozenset(expect) & ALLOWED_FROM[to]
    stmt = update(Job).where(Job.status.in_([s.value for s in sources]), *where)
    if job_id is not None:
        stmt = stmt.where(Job.id == job_id)
    if attempt is not None:
        stmt = stmt.where(Job.attempts == attempt)
    return stmt.values(status=to.value, **values).execution_options(synchronize_session=False)


# Every column of a job, labelled with Job's attribute names: a Core row of these
# (`.returning(*JOB_COLUMNS)`) reads like a Job, without the ORM's per-row cost.
JOB_COLUMNS = tuple(col.label(attr.key) for attr in Job.__mapper__.column_attrs
                    for col in attr.columns)


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def envelope(job: Job | Row[Any]) -> dict[str, Any]:
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
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "start_by": iso(job.start_by),
        "timeout_s": job.timeout_s,
        "metadata": job.metadata_ or {},
        "metrics": job.metrics or {},
        "batch_id": job.batch_id,
    }
