"""A producer that keeps its messages in memory, for tests of the layers above (as
dramatiq's StubBroker): inject it with `create_app(settings, producer=StubProducer())`.

Nothing it takes is marked published, so a reconciler tick sends those jobs again
(through the stub too), as it would for jobs whose send was lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from common.errors import BrokerUnavailable
from common.producer.base import TaskMessage


class StubProducer:
    """`messages`: every task sent, oldest first. Set `broker_down = True` to play a
    broker that is away: publish_soon then sends nothing (the job waits for the
    reconciler) and publish_many raises BrokerUnavailable."""

    def __init__(self) -> None:
        self.messages: list[TaskMessage] = []
        self.broker_down = False
        self.started = False
        self.closed = False

    def start(self) -> None:
        self.started = True

    def premark(self) -> datetime | None:
        return None  # it marks nothing

    async def publish_soon(self, *, job_id: str, kind: str, model: str, queue: str,
                           priority: str, attempt_hint: int = 0, wait_s: float = 0.05,
                           marked: bool = False) -> None:
        if not self.broker_down:
            self.messages.append(TaskMessage(job_id=job_id, kind=kind, model=model, queue=queue,
                                             priority=priority, attempt_hint=attempt_hint))

    async def publish_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.broker_down:
            raise BrokerUnavailable(f"{len(rows)} job tasks not sent: the stub broker is down")
        self.messages.extend(TaskMessage.of_row(row) for row in rows)

    async def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        if self.broker_down:
            raise BrokerUnavailable(f"{len(messages)} tasks not sent: the stub broker is down")
        self.messages.extend(messages)

    def take(self) -> list[TaskMessage]:
        """The messages sent since the last take, oldest first."""
        taken, self.messages = self.messages, []
        return taken

    async def close(self) -> None:
        self.closed = True
