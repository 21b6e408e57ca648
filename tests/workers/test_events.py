"""EventWriter on real Redis: token coalescing keeps the order of a job's events."""

from __future__ import annotations

import time

import redis

from common.events import EventWriter, decode, events_key
from tests.conftest import fresh_redis_url


def test_done_never_overtakes_tokens_the_flusher_is_writing(redis_base):
    url = fresh_redis_url(redis_base)
    r = redis.Redis.from_url(url)
    writer = EventWriter(r, maxlen=1000, ttl_s=60, coalesce_s=0.01)
    write = writer._xadd

    def slow_write(job_id: str, type_: str, data: dict) -> None:
        time.sleep(0.3)  # the flusher thread, caught between taking tokens and writing
        write(job_id, type_, data)

    writer._xadd = slow_write
    writer.emit("job_order", "status", {"status": "running"})
    writer.token("job_order", "a ", 0)  # within the coalescing window: buffered
    writer.token("job_order", "b", 1)
    time.sleep(0.1)  # the flusher has taken them and is writing
    writer.emit_many("job_order", [("status", {"status": "succeeded"}), ("done", {})],
                     final=True)
    events = [decode(f) for _, f in r.xrange(events_key("job_order"))]
    assert [t for t, _ in events] == ["status", "token", "status", "done"]
    assert events[1][1] == {"text": "a b", "index": 0, "count": 2}
    assert writer._job_locks == {}  # nothing kept for a job that ended
    writer.close()
