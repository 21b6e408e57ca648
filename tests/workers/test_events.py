"""EventWriter on real Redis: token coalescing keeps the order of a job's events."""

from __future__ import annotations

import asyncio
import threading
import time

import redis
import redis.asyncio as aioredis

from common.events import AsyncEventLog, EventWriter, decode, events_key
from tests.conftest import fresh_redis_url


def test_done_never_overtakes_tokens_the_flusher_is_writing(redis_base):
    url = fresh_redis_url(redis_base)
    r = redis.Redis.from_url(url)
    writer = EventWriter(r, maxlen=1000, ttl_s=60, coalesce_s=0.01)
    write = writer._write

    def slow_write(job_id: str, items: list, **kw) -> None:
        if threading.current_thread().name == "event-flusher":
            time.sleep(0.3)  # caught between taking the tokens and writing them
        write(job_id, items, **kw)

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


class Unreachable:
    """A Redis client whose every round trip fails, as one cut off by a partition does
    after its socket timeout; counts them."""

    def __init__(self) -> None:
        self.round_trips = 0

    def xadd(self, *args, **kw):
        self.round_trips += 1
        raise redis.TimeoutError("Timeout reading from socket")

    def pipeline(self, transaction: bool = True):
        return UnreachablePipeline(self)


class UnreachablePipeline:
    def __init__(self, client: Unreachable) -> None:
        self.client = client

    def xadd(self, *args, **kw) -> None:
        pass

    def expire(self, *args, **kw) -> None:
        pass

    def execute(self):
        self.client.xadd()


def test_after_a_failed_write_only_a_jobs_last_events_are_tried():
    """While Redis does not answer, a running job's events are dropped at once instead
    of each waiting out the socket timeout; its `done` is still tried."""
    client = Unreachable()
    writer = EventWriter(client, maxlen=1000, ttl_s=60, coalesce_s=0.01, quiet_s=5)
    writer.emit("job_cut", "status", {"status": "running"})  # fails: quiet from now on
    for i in range(20):
        writer.token("job_cut", f"w{i} ", i)
        writer.flush("job_cut")
    writer.emit("job_cut", "progress", {"done": 1})
    assert client.round_trips == 1
    writer.emit_many("job_cut", [("status", {"status": "succeeded"}), ("done", {})],
                     final=True)
    assert client.round_trips == 2
    writer.close()


def test_readers_leave_out_the_tokens_of_a_superseded_attempt(redis_base):
    """Attempt 1's worker, cut off from the database, streams on after attempt 2
    began: a follower gets attempt 1's text until the restart, then attempt 2's alone.
    One that resumes after the restart learns the attempt from the first token of it."""
    url = fresh_redis_url(redis_base)
    r = redis.Redis.from_url(url)
    writer = EventWriter(r, maxlen=1000, ttl_s=60, coalesce_s=0)
    writer.emit("job_two", "status", {"status": "running", "attempt": 1})
    writer.token("job_two", "old ", 0, attempt=1)
    writer.emit("job_two", "status", {"status": "running", "attempt": 2, "restarted": True})
    writer.token("job_two", "stale ", 1, attempt=1)
    writer.token("job_two", "new", 0, attempt=2)
    writer.token("job_two", "stale", 2, attempt=1)
    writer.emit_many("job_two", [("done", {"status": "succeeded"})], final=True)
    writer.close()
    restart = r.xrange(events_key("job_two"))[2][0].decode()

    async def follow(after: str | None) -> list[tuple[str, str | None]]:
        client = aioredis.Redis.from_url(url)

        async def lookup() -> None:
            return None

        log = AsyncEventLog(client, maxlen=1000, ttl_s=60)
        events = [e async for chunk in log.follow("job_two", lookup=lookup, after=after,
                                                   block_ms=50) for e in chunk]
        await client.aclose()
        return [(e.type, e.data.get("text")) for e in events]

    assert asyncio.run(follow(None)) == [("status", None), ("token", "old "),
                                         ("status", None), ("token", "new"), ("done", None)]
    assert asyncio.run(follow(restart)) == [("token", "stale "), ("token", "new"),
                                            ("done", None)]


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
