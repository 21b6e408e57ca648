"""Publishes job tasks from the event loop without blocking it.

Each task is one pipelined round trip on the API's asyncio Redis client: the message
that Celery's send_task would put on the queue, and Flower's task-sent event
(common.wire builds both). Celery's own producer blocks, and in a thread it would
fight the event loop for the GIL on every socket call. After a failure the
publisher stays quiet for a moment and leaves the job to the reconciler, so submits
keep answering 202 fast while Redis is down. Published jobs are marked
(`published_at`) in one UPDATE per flush interval rather than one per request; until
marked, the reconciler leaves a young job alone (and a republished duplicate would
be harmless anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from redis.exceptions import RedisError
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from common.db import Job, utcnow
from common.wire import TaskWire

log = logging.getLogger("monkey.api")

_BROKER_ERRORS = (RedisError, OSError)


class Publisher:
    def __init__(self, redis_client, sessions: async_sessionmaker, *, quiet_s: float = 1.0,
                 flush_s: float = 0.5):
        self.redis = redis_client
        self.wire = TaskWire(db=redis_client.connection_pool.connection_kwargs.get("db", 0))
        self.sessions = sessions
        self.quiet_s = quiet_s
        self.flush_s = flush_s
        self._down_until = 0.0
        self._published: dict[str, datetime] = {}  # job id -> when it went out
        self._pending: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="publish-marker")

    @property
    def broker_down(self) -> bool:
        return time.monotonic() < self._down_until

    async def publish(self, *, job_id: str, kind: str, model: str, queue: str, priority: str,
                      attempt_hint: int = 0, force: bool = False) -> bool:
        """True when the task is on the broker; False when it is left for later."""
        if self.broker_down and not force:
            return False
        sent_at = utcnow()
        pipe = self.redis.pipeline(transaction=False)
        for command, key, payload in self.wire.publish_commands(
                job_id=job_id, kind=kind, model=model, queue=queue, priority=priority,
                attempt_hint=attempt_hint):
            getattr(pipe, command)(key, payload)
        try:
            await pipe.execute()
        except _BROKER_ERRORS as exc:
            self._down_until = time.monotonic() + self.quiet_s
            log.warning("broker unavailable, job %s left for the reconciler: %s", job_id, exc)
            return False
        self._down_until = 0.0
        self._published[job_id] = sent_at
        return True

    async def publish_soon(self, wait_s: float = 0.05, **job) -> None:
        """Publish, waiting at most `wait_s` for it: a healthy broker answers well within
        that, so the worker has the task before the submit's reply goes out; a slow
        one does not hold the reply up (the publish goes on in the background). If
        this process dies first, the reconciler publishes the job (it is unmarked)."""
        task = asyncio.get_running_loop().create_task(self.publish(**job))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.wait({task}, timeout=wait_s)

    async def flush(self) -> int:
        sent, self._published = self._published, {}
        if not sent:
            return 0
        ids = list(sent)
        try:
            async with self.sessions() as s:
                # The earliest send time of the lot: a mark that lands after the
                # reconciler found Redis emptied must still look older than that.
                await s.execute(update(Job).where(Job.id.in_(ids), Job.published_at.is_(None))
                                .values(published_at=min(sent.values())))
                await s.commit()
        except SQLAlchemyError as exc:
            self._published = {**sent, **self._published}
            log.warning("could not mark %d jobs published: %s", len(ids), exc)
        return len(ids)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        await self.flush()
