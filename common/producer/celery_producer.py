"""The real producer: the fast path for one job from the event loop, the kombu path
for many rows; both put the same Celery message on the same Redis lists.

After a failed send the producer stays quiet for a moment (`broker_down`) and leaves
jobs to the reconciler, so submits keep answering 202 fast while Redis is down; any
successful send, single or bulk, ends the quiet at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from common.errors import BrokerUnavailable
from common.producer.base import TaskMessage
from common.producer.fast import FastPath
from common.producer.kombu_path import KombuPath
from common.producer.marks import PublishMarks
from common.settings import Settings

log = logging.getLogger("monkey.producer")

_BROKER_ERRORS = (KombuError, RedisError, OSError)


class CeleryProducer:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
                 quiet_s: float = 1.0, flush_s: float = 0.5):
        self.settings = settings
        self.fast = FastPath.from_settings(settings)
        self.marks = PublishMarks(sessions, flush_s=flush_s)
        self.quiet_s = quiet_s
        self._kombu: KombuPath | None = None  # built on first bulk send: most processes never
        self._down_until = 0.0
        self._pending: set[asyncio.Task[bool]] = set()

    @property
    def broker_down(self) -> bool:
        return time.monotonic() < self._down_until

    def start(self) -> None:
        self.marks.start()

    def premark(self) -> datetime | None:
        return None if self.broker_down else utcnow()

    async def publish_soon(self, *, job_id: str, kind: str, model: str, queue: str,
                           priority: str, attempt_hint: int = 0, wait_s: float = 0.05,
                           marked: bool = False) -> None:
        # A healthy broker answers well within wait_s, so the worker has the task
        # before the submit's reply goes out; a slow one does not hold the reply up
        # (the send goes on in the background). If this process dies first, the
        # reconciler sends the job: at once if it is unmarked, after
        # MONKEY_LOST_AFTER_S (its lost-message sweep) if it was marked in its INSERT.
        msg = TaskMessage(job_id=job_id, kind=kind, model=model, queue=queue,
                          priority=priority, attempt_hint=attempt_hint)
        task = asyncio.get_running_loop().create_task(self._publish_one(msg, marked))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.wait({task}, timeout=wait_s)

    async def _publish_one(self, msg: TaskMessage, marked: bool) -> bool:
        sent_at = utcnow()
        sent = not self.broker_down and await self._send(msg)
        if marked and not sent:
            self.marks.unmark(msg.job_id)
        elif sent and not marked:
            self.marks.add(msg.job_id, sent_at)
        return sent

    async def _send(self, msg: TaskMessage) -> bool:
        try:
            await self.fast.send(msg)
        except _BROKER_ERRORS as exc:
            self._down_until = time.monotonic() + self.quiet_s
            log.warning("broker unavailable, job %s left for the reconciler: %s",
                        msg.job_id, exc)
            return False
        self._down_until = 0.0
        return True

    async def publish_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await self.publish_tasks([TaskMessage.of_row(row) for row in rows])

    async def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        if not messages:
            return
        if self._kombu is None:
            self._kombu = KombuPath(self.settings)
        try:
            await asyncio.to_thread(self._kombu.publish, messages)
        except _BROKER_ERRORS as exc:
            self._down_until = time.monotonic() + self.quiet_s
            raise BrokerUnavailable(f"{len(messages)} tasks not sent: {exc}") from exc
        self._down_until = 0.0

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        await self.marks.close()
        if self._kombu is not None:
            self._kombu.close()
        await self.fast.close()
