"""Waking the ML service when gpu jobs wait and no gpu worker is alive.

The ML service scales to zero (`monkey ml-service`: its worker exits when idle, and
the platform may then put the container to sleep, as Railway's Serverless does). Jobs
for `local/...` models would then wait forever, so the control process wakes it: on
each reconciler pass of the leading control process, if a gpu job is queued and no live
worker serves the gpu queue, it sends `POST {ML_SERVICE_URL}/wake`.

Rate-limited to one request per `MONKEY_WAKE_INTERVAL_S`, long enough for a worker to
load its models and announce itself; a wake that got no answer (a sleeping Railway
service may refuse the first connection while it boots) is simply sent again at the
next interval. Never on a request's path: a submit only writes the job.
"""

from __future__ import annotations

import logging
import time

import httpx
from sqlalchemy import select

from api.services.queues import workers
from api.state import AppState
from common.constants import QUEUE_GPU
from common.db import Job
from common.jobs import JobStatus

log = logging.getLogger("monkey.wake")


class Waker:
    def __init__(self, state: AppState):
        self.state = state
        self.url = state.settings.ml_service_url.rstrip("/")
        self.interval_s = state.settings.wake_interval_s
        self._next = 0.0
        self.sent = 0

    async def needed(self) -> bool:
        """A gpu job waits and no live worker serves the gpu queue."""
        async with self.state.auto_sessions() as s:
            waiting = (await s.execute(
                select(Job.id).where(Job.status == JobStatus.QUEUED, Job.queue == QUEUE_GPU)
                .limit(1))).first() is not None
        if not waiting:
            return False
        return not any(QUEUE_GPU in w["queues"] for w in await workers(self.state.redis))

    async def maybe_wake(self) -> bool:
        """One pass: wake the ML service if it is needed and not woken recently."""
        if not self.url or time.monotonic() < self._next or not await self.needed():
            return False
        self._next = time.monotonic() + self.interval_s
        self.sent += 1
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                resp = await client.post(f"{self.url}/wake")
            log.info("woke the ML service: %s %s", resp.status_code, resp.text[:200])
            return resp.status_code < 400
        except httpx.HTTPError as exc:
            log.warning("ML service not reached at %s (retried in %gs): %s",
                        self.url, self.interval_s, exc)
            return False


__all__ = ["Waker"]
