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
    write = writer._write

    def slow_write(job_id: str, items: list) -> None:
        time.sleep(0.3)  # the flusher thread, caught between taking tokens and writing
        write(job_id, items)

    writer._write = slow_write
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


def test_a_deferred_status_goes_first_with_the_next_write_or_alone_soon(redis_base):
    url = fresh_redis_url(redis_base)
    r = redis.Redis.from_url(url)
    writer = EventWriter(r, maxlen=1000, ttl_s=60, coalesce_s=0.01)

    def stream(job_id: str) -> list:
        return [decode(f) for _, f in r.xrange(events_key(job_id))]

    # A job that ends within the window: its status, tokens and end in one write.
    writer.defer("job_quick", "status", {"status": "running"})
    assert stream("job_quick") == []  # not yet
    writer.token("job_quick", "a ", 0)
    writer.token("job_quick", "b", 1)
    writer.emit_many("job_quick", [("status", {"status": "succeeded"}), ("done", {})],
                     final=True)
    assert stream("job_quick") == [
        ("status", {"status": "running"}), ("token", {"text": "a b", "index": 0, "count": 2}),
        ("status", {"status": "succeeded"}), ("done", {})]
    # A job that stays quiet: the flusher writes its status within the window.
    writer.defer("job_slow", "status", {"status": "running"})
    deadline = time.monotonic() + 2
    while not stream("job_slow") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert stream("job_slow") == [("status", {"status": "running"})]
    writer.close()
