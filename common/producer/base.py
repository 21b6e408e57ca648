"""What a producer sends (`TaskMessage`) and what the API asks of one (`Producer`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from common.constants import PRIORITY_VALUE, TASK_BY_KIND, TASK_CHUNK


@dataclass(frozen=True)
class TaskMessage:
    """One job's task: the job id and model travel, never the input (workers read it
    from the database). Its task id carries the attempt it was sent for.

    A chunk (`job_ids` set) carries many batch lines of one model in one message; its
    task id is its first line's, so that the reconciler's look at unacked messages
    finds it."""

    job_id: str
    kind: str
    model: str
    queue: str
    priority: str
    attempt_hint: int = 0
    job_ids: tuple[str, ...] = ()

    @classmethod
    def chunk(cls, rows: Sequence[Mapping[str, Any]]) -> TaskMessage:
        """One message for job rows of one model and queue (a chunk of batch lines)."""
        first = rows[0]
        return cls(job_id=first["id"], kind=first["kind"], model=first["model"],
                   queue=first["queue"], priority=first["priority"],
                   job_ids=tuple(r["id"] for r in rows))

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> TaskMessage:
        """From a job row as the bulk callers hold it (id, kind, model, queue, priority,
        attempts)."""
        return cls(job_id=row["id"], kind=row["kind"], model=row["model"], queue=row["queue"],
                   priority=row["priority"], attempt_hint=row.get("attempts") or 0)

    @property
    def task(self) -> str:
        return TASK_CHUNK if self.job_ids else TASK_BY_KIND[self.kind]

    @property
    def task_id(self) -> str:
        if self.job_ids:
            return f"{self.job_id}.c{len(self.job_ids)}"
        return f"{self.job_id}.{self.attempt_hint}"

    @property
    def priority_value(self) -> int:
        return PRIORITY_VALUE[self.priority]

    @property
    def args(self) -> list[Any]:
        return [list(self.job_ids)] if self.job_ids else [self.job_id]

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"model": self.model}


@runtime_checkable
class Producer(Protocol):
    """Sends job tasks to the broker. A job row is written before its task is sent, and a
    job whose task never went out is the reconciler's to send, so no method here may
    hold up a request for long or lose a job by failing."""

    @property
    def broker_down(self) -> bool:
        """True for a moment after a send failed: callers leave their jobs to the
        reconciler instead of waiting on a broker that is away."""
        ...

    def start(self) -> None:
        """Start background work (on the running event loop)."""
        ...

    def premark(self) -> datetime | None:
        """The `published_at` to write in a job's INSERT when its send is expected to
        succeed (then publish_soon with `marked`: no UPDATE to mark it); None when the
        job is to be written unmarked (the broker is away, or this producer marks
        nothing)."""
        ...

    async def publish_soon(self, *, job_id: str, kind: str, model: str, queue: str,
                           priority: str, attempt_hint: int = 0, wait_s: float = 0.05,
                           marked: bool = False) -> None:
        """Send one job's task from the event loop, waiting at most `wait_s` for it. Never
        raises for the broker: a job that did not go out waits for the reconciler. The
        job is marked published (`published_at`) once it went out; one `marked` in its
        INSERT (premark) is unmarked instead if its send fails."""
        ...

    async def publish_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Send a task per job row (id, kind, model, queue, priority, attempts) before
        returning, without blocking the event loop. Raises BrokerUnavailable. The
        caller marks the rows published (in its own transaction)."""
        ...

    async def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        """Send these messages (single jobs or chunks) as publish_many does."""
        ...

    async def close(self) -> None:
        """Finish what is in flight and let go of connections."""
        ...
