"""The queue gauges cost a few queries: many scrapes within the interval compute them once."""

from __future__ import annotations

import asyncio
from functools import partial

from api.metrics import GAUGES_COMPUTED, QUEUE_DEPTH, QueueGauges


def test_scrapes_within_the_interval_share_one_computation(inproc):
    state = inproc.state
    gauges = QueueGauges(ttl_s=60)
    refresh = partial(gauges.refresh, sessions=state.sessions, redis=state.redis)

    async def scrapes(n: int) -> None:
        await asyncio.gather(*(refresh() for _ in range(n)))

    before = GAUGES_COMPUTED._value.get()
    inproc.client.portal.call(scrapes, 5)
    inproc.submit()
    inproc.client.portal.call(scrapes, 5)
    assert GAUGES_COMPUTED._value.get() == before + 1
    depth = QUEUE_DEPTH.labels("llm", "interactive")._value.get()

    gauges.ttl_s = 0  # the interval passed: the next scrape sees the new job
    inproc.client.portal.call(refresh)
    assert GAUGES_COMPUTED._value.get() == before + 2
    assert QUEUE_DEPTH.labels("llm", "interactive")._value.get() == depth + 1
