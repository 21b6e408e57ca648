"""`monkey worker --idle-exit S`: exits 0 after S idle seconds, never while it holds a job."""

from __future__ import annotations

import time

import redis

from tests.conftest import _worker_ready, wait_until


def test_worker_exits_after_idle_time_and_not_while_a_job_is_held(make_stack):
    stack = make_stack("sqlite")
    r = redis.Redis.from_url(stack.redis_url)
    proc = stack.spawn("worker-idle", ["worker", "--queues", "llm", "--concurrency", "2",
                                       "--idle-exit", "1.5"])
    wait_until(lambda: _worker_ready(r, proc.pid), 60, "worker ready", proc)
    # A job of about 4 s, longer than the idle time: the worker runs it to the end.
    job = stack.submit(input={"prompt": "one two three four five"},
                       params={"delay_ms": 800})
    wait_until(lambda: stack.get(job["id"])["status"] in ("succeeded", "failed"), 30,
               "the slow job finished", proc)
    done = stack.get(job["id"])
    assert done["status"] == "succeeded", done
    assert done["metrics"]["run_ms"] > 3000  # it was busy for twice the idle time
    finished = time.monotonic()
    proc.wait(15)
    assert proc.returncode == 0, stack.logs()
    idle_for = time.monotonic() - finished
    assert idle_for >= 1.0, "exited before the idle time"
    assert "idle for 1.5s with nothing running or held: exiting" in proc.log_path.read_text()

