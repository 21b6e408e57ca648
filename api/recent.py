"""The jobs this API process created lately (see RecentJobs)."""

from __future__ import annotations

import time
from collections import OrderedDict


class RecentJobs:
    """The jobs this API process created lately, by id, with their owner: following the
    events of a job just submitted here (POST, then GET .../events, the common flow)
    then needs no read of its row to know that it exists and is the caller's (an
    owner never changes). Bounded in number and in age, far below the time a job's
    event stream is kept, so a job found here still has its stream (a job whose own
    expires_after is shorter is not added: the sweep could delete it first)."""

    def __init__(self, *, size: int = 10_000, ttl_s: float = 60.0):
        self.size = size
        self.ttl_s = ttl_s
        self._jobs: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def add(self, job_id: str, owner_id: str) -> None:
        self._jobs[job_id] = (owner_id, time.monotonic())
        while len(self._jobs) > self.size:
            self._jobs.popitem(last=False)

    def owned(self, job_id: str, owner_id: str) -> bool:
        got = self._jobs.get(job_id)
        return got is not None and got[0] == owner_id and \
            time.monotonic() - got[1] < self.ttl_s


__all__ = ["RecentJobs"]
