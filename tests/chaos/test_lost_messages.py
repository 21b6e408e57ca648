"""Task messages that vanish from Redis, and jobs that run anyway, once each.

kombu loses a message outright when a worker dies between its BRPOP and its write to
the `unacked` hash, when someone runs `celery purge`, or when Redis evicts the list.
The reconciler finds the queued jobs whose message is nowhere and publishes them
again (api/recovery.py), and leaves a healthy backlog alone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import create_engine, text

from common.compat.kombu_redis import queue_lists
from common.constants import BROKER_EPOCH
from common.events import decode, events_key
from tests.conftest import wait_until

LLM_LISTS = queue_lists(["llm"])

# What a worker does with its next message, and then it dies: BRPOP as kombu sends it
# (every priority list of the queue, highest first), then SIGKILL before anything else.
THIEF = """
import os, signal, sys, redis
r = redis.Redis.from_url(sys.argv[1])
key, raw = r.brpop(sys.argv[2:], timeout=10)
print(raw.decode(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def messages(r: redis.Redis) -> int:
    return sum(r.llen(key) for key in LLM_LISTS)


def sweeps(stack) -> list[dict]:
    """The figures of every lost-message sweep the reconciler logged, in order."""
    lines = map(json.loads, stack.api_proc.log_path.read_text().splitlines())
    return [line["sweep"] for line in lines if "sweep" in line]


def wait_marked(stack, n: int) -> None:
    """Until n jobs are marked published (or were taken by a worker before their mark)
    and the reconciler made its first pass: from then on only a lost message's recovery
    sends them again (the reconciler sends an unmarked job anyway, and its first pass
    on a fresh Redis used to send every queued job)."""
    r = redis.Redis.from_url(stack.redis_url)
    wait_until(lambda: r.exists(BROKER_EPOCH), 30, "the reconciler's first pass")
    engine = create_engine(stack.settings.sync_database_url)
    try:
        with engine.connect() as conn:
            wait_until(lambda: conn.execute(text(
                "SELECT count(*) FROM jobs WHERE published_at IS NOT NULL OR status <> 'queued'"))
                .scalar() == n,
                20, f"{n} jobs marked published")
    finally:
        engine.dispose()


def assert_ran_once(stack, job: dict, *, timeout: float) -> None:
    done = stack.wait(job["id"], timeout=timeout)
    assert done["status"] == "succeeded", done
    assert done["output"]["text"] == job["input"]["prompt"]
    assert done["attempts"] == 1
    r = redis.Redis.from_url(stack.redis_url)

    def types() -> list[str]:
        return [decode(fields)[0] for _, fields in r.xrange(events_key(job["id"]))]

    # The row is written first and the events a moment later (the store's order: the
    # database is the truth); tokens that came within the coalescing window go with
    # the `done` event, so a look between the two writes sees the `running` status alone.
    wait_until(lambda: "done" in types(), 5, f"the done event of {job['id']}")
    seen = types()
    assert seen.count("done") == 1 and seen.count("token") >= 1, seen


@pytest.mark.parametrize("db", ["postgres", "sqlite"])
def test_jobs_whose_messages_were_deleted_run_when_a_worker_comes(make_stack, db):
    """The issue's case: no worker, 20 jobs, their queue's lists deleted (as `celery
    purge` or an eviction does), then a worker: every job succeeds, once, within 30 s."""
    stack = make_stack(db)
    r = redis.Redis.from_url(stack.redis_url)
    # After the two sweeps of the reconciler's first pass on a fresh Redis, which would
    # find these jobs too: here the loss comes later, unannounced.
    wait_until(lambda: [s["reason"] for s in sweeps(stack)] == ["loss"] * 2, 30,
               "the sweeps of the first pass")
    jobs = [stack.submit(input={"prompt": f"lost message {i}"}) for i in range(20)]
    wait_until(lambda: messages(r) == 20, 10, "20 messages on the broker")
    wait_marked(stack, 20)
    assert r.delete(*LLM_LISTS) >= 1

    started = time.monotonic()
    stack.start_worker("llm", concurrency=8)
    for job in jobs:
        assert_ran_once(stack, job, timeout=30)
    assert time.monotonic() - started < 30
    assert messages(r) == 0


def test_a_worker_killed_between_its_brpop_and_its_unacked_write(make_stack):
    """A consumer takes a message off the list and is SIGKILLed before it records it
    anywhere, while a live worker works through the rest: the message is gone from
    Redis, and its job still runs, once."""
    stack = make_stack("postgres")
    stack.start_worker("llm", concurrency=1)  # the others wait on the list meanwhile
    jobs = [stack.submit(input={"prompt": f"job {i} " + " ".join(f"w{k}" for k in range(5))},
                         params={"delay_ms": 60}) for i in range(8)]
    wait_marked(stack, 8)
    thief = subprocess.run([sys.executable, "-c", THIEF, stack.redis_url, *LLM_LISTS],
                           capture_output=True, timeout=30)
    assert thief.returncode == -signal.SIGKILL, thief.stderr
    stolen = thief.stdout.decode()
    victim = next(j for j in jobs if j["id"] in stolen)
    for job in jobs:
        assert_ran_once(stack, job, timeout=30)
    assert stack.get(victim["id"])["status"] == "succeeded"


def test_a_healthy_backlog_is_never_published_again(make_stack):
    """300 waiting jobs with no worker, and the reconciler's epoch marker gone (a fresh
    Redis the API published to before the control process's first pass): the sweeps
    after the loss read every message, and every job keeps exactly one (the
    reconciler used to publish all 300 again)."""
    stack = make_stack("postgres")
    client = stack.client()
    for i in range(300):
        stack.submit(client, input={"prompt": f"backlog {i}"},
                     priority="batch" if i % 3 else "interactive")
    r = redis.Redis.from_url(stack.redis_url)
    wait_until(lambda: messages(r) == 300, 20, "300 messages on the broker")
    wait_marked(stack, 300)
    r.delete(BROKER_EPOCH)

    until = time.monotonic() + 13
    seen = set()
    while time.monotonic() < until:
        seen.add(messages(r))
        time.sleep(0.2)
    assert seen == {300}
    assert r.exists(BROKER_EPOCH)  # the reconciler saw it gone and set it again
    # The first pass on the stack's fresh Redis swept too, while the test submitted.
    assert not any(s["unmarked"] for s in sweeps(stack))
    assert [(s["reason"], s["read"]) for s in sweeps(stack)[-2:]] == [("loss", 300)] * 2
