"""Nothing is lost: a SIGKILLed worker's job is requeued by its lease in seconds and
completes once, and a job submitted while Redis is down runs once Redis is back."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import create_engine, text

from monkey.embedded import EmbeddedRedis
from tests.conftest import wait_until

PROMPT = " ".join(f"w{i}" for i in range(40))


@pytest.mark.parametrize("db", ["postgres", "sqlite"])
def test_sigkilled_worker_job_is_requeued_and_completes_once(make_stack, db):
    stack = make_stack(db)
    first = stack.start_worker("llm", concurrency=4)
    job = stack.submit(input={"prompt": PROMPT}, params={"delay_ms": 100})
    head = stack.events(job["id"], limit=4)  # running + 3 tokens: mid-job
    assert head[0][2] == {"status": "running", "attempt": 1}

    stack.kill(first)
    killed_at = time.monotonic()
    stack.start_worker("llm", concurrency=4)
    done = stack.wait(job["id"], timeout=30)
    recovered_s = time.monotonic() - killed_at

    assert done["status"] == "succeeded", stack.logs()
    assert done["attempts"] == 2
    assert done["output"]["text"] == PROMPT  # whole, not doubled
    # lease 3 s + reconciler + a new run of 4 s: seconds, not the visibility timeout.
    assert recovered_s < 20, recovered_s
    events = stack.events(job["id"])
    statuses = [d for _, t, d in events if t == "status"]
    assert [d["status"] for d in statuses] == ["running", "queued", "running", "succeeded"]
    assert statuses[1]["requeued"] and statuses[2] == {"status": "running", "attempt": 2,
                                                        "restarted": True}
    assert [t for _, t, _ in events].count("done") == 1
    engine = create_engine(stack.settings.sync_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, attempts, output FROM jobs WHERE id = :id"), {"id": job["id"]}
        ).all()
    engine.dispose()
    assert len(rows) == 1 and rows[0][0] == "succeeded" and rows[0][1] == 2


def test_submit_while_redis_is_down_completes_when_it_is_back(make_stack, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        stack = make_stack("sqlite", redis_url=server.url)
        stack.start_worker("llm", concurrency=4)
        server.stop()

        t0 = time.monotonic()
        jobs = [stack.submit(input={"prompt": f"while redis was down {i}"}) for i in range(3)]
        assert time.monotonic() - t0 < 10  # answered, not hung on the broker
        assert all(j["status"] == "queued" for j in jobs)
        assert stack.client().get("/readyz").status_code == 503

        server.start()
        for j in jobs:
            done = stack.wait(j["id"], timeout=60)
            assert done["status"] == "succeeded", stack.logs()
            assert done["output"]["text"] == j["input"]["prompt"]
            assert done["attempts"] == 1
        wait_until(lambda: stack.client().get("/readyz").status_code == 200, 10, "ready again")
    finally:
        server.stop()


def test_redis_losing_its_data_requeues_waiting_jobs(make_stack, tmp_path):
    """A Redis restart without persistence drops the queue; the epoch marker notices."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        stack = make_stack("sqlite", redis_url=server.url)
        job = stack.submit(input={"prompt": "queued before the flush"})
        r = redis.Redis.from_url(server.url)
        wait_until(lambda: r.llen("llm") > 0, 10, "task on the broker")
        r.flushall()  # what a restart without persistence looks like
        stack.start_worker("llm", concurrency=2)
        done = stack.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded" and done["attempts"] == 1
    finally:
        server.stop()


def test_a_row_locked_by_a_stopped_transaction_does_not_stall_the_reconciler(make_stack):
    """Two running jobs whose leases lapsed; another transaction holds one's row (as a
    process stopped inside a transaction would). The other is requeued at once; the
    locked one as soon as the lock goes."""
    stack = make_stack("postgres")  # no worker: the jobs stay queued once requeued
    ids = [stack.submit(input={"prompt": f"job {i}"})["id"] for i in range(2)]
    engine = create_engine(stack.settings.sync_database_url)
    status = "SELECT status FROM jobs WHERE id = :id"
    try:
        with engine.begin() as c:
            c.execute(text("UPDATE jobs SET status = 'running', attempts = 1, "
                           "lease_expires_at = now() - interval '1 minute'"))
        with engine.connect() as holder:
            holder.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"),
                           {"id": ids[0]})
            with engine.connect() as c:
                wait_until(lambda: c.execute(text(status), {"id": ids[1]}).scalar()
                           == "queued", 10, "the unlocked job requeued")
                assert c.execute(text(status), {"id": ids[0]}).scalar() == "running"
            holder.rollback()  # the stopped process goes away
        with engine.connect() as c:
            wait_until(lambda: c.execute(text(status), {"id": ids[0]}).scalar() == "queued",
                       10, "the other job requeued once its row is free")
    finally:
        engine.dispose()
