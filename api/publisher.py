"""Publishes job tasks from the event loop without blocking it.

Celery's send_task blocks (about a millisecond, seconds when Redis is away), so it
runs in a small thread pool. After a failure the publisher stays quiet for a moment
and leaves the job to the reconciler, so submits keep answering 202 fast while
Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError

from common.celery_app import publish_job

log = logging.getLogger("monkey.api")

_BROKER_ERRORS = (OperationalError, KombuError, RedisError, OSError)


class Publisher:
    def __init__(self, celery: Celery, *, quiet_s: float = 1.0, threads: int = 8):
        self.celery = celery
        self.quiet_s = quiet_s
        self._down_until = 0.0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="publish")

    @property
    def broker_down(self) -> bool:
        return time.monotonic() < self._down_until

    async def publish(self, *, job_id: str, kind: str, model: str, queue: str, priority: str,
                      attempt_hint: int = 0, force: bool = False) -> bool:
        """True when the task is on the broker; False when it is left for later."""
        if self.broker_down and not force:
            return False
        call = partial(publish_job, self.celery, job_id=job_id, kind=kind, model=model,
                       queue=queue, priority=priority, attempt_hint=attempt_hint)
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except _BROKER_ERRORS as exc:
            self._down_until = time.monotonic() + self.quiet_s
            log.warning("broker unavailable, job %s left for the reconciler: %s", job_id, exc)
            return False
        self._down_until = 0.0
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
