"""Outages: Redis stopped during a stream of submits, Postgres restarted during a run,
and a worker that hangs without heartbeats. No accepted job is lost."""

from __future__ import annotations

import signal
import threading
import time

from sqlalchemy import create_engine, text

from monkey.embedded import EmbeddedRedis
from tests.conftest import TERMINAL, Database, wait_until


def test_redis_outage_during_submits_loses_nothing(make_stack, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        stack = make_stack("postgres", redis_url=server.url)
        stack.start_worker("llm", concurrency=16)
        # SSE clients following slow jobs across the outage.
        followed = [stack.submit(input={"prompt": " ".join(f"s{i}w{k}" for k in range(30))},
                                 params={"delay_ms": 300}) for i in range(3)]
        results: dict[str, list] = {}

        def follow(job_id: str) -> None:
            results[job_id] = stack.events(job_id, timeout=120)

        readers = [threading.Thread(target=follow, args=(j["id"],)) for j in followed]
        for t in readers:
            t.start()
        wait_until(lambda: all(stack.get(j["id"])["status"] == "running" for j in followed),
                   20, "followed jobs running")

        submitted = []
        stop_at = time.monotonic() + 3
        outage = None
        while time.monotonic() < stop_at + 12:
            if outage is None and time.monotonic() >= stop_at:
                server.stop()
                outage = time.monotonic()
            back_due = outage is not None and time.monotonic() - outage >= 10
            if back_due and server.proc.poll() is not None:
                server.start()
            resp = stack.default_client.post("/v1/jobs", json={
                "model": "debug/echo", "input": {"prompt": f"submit {len(submitted)}"}})
            assert resp.status_code == 202, resp.text
            submitted.append(resp.json())
            time.sleep(0.1)
        if server.proc.poll() is not None:
            server.start()

        for j in submitted + followed:
            done = stack.wait(j["id"], timeout=120)
            assert done["status"] == "succeeded", (j["id"], done["status"], stack.logs())
            assert done["output"]["text"] == j["input"]["prompt"]
        for t in readers:
            t.join(60)
        for j in followed:
            events = results[j["id"]]
            assert events[-1][1] == "done", events[-3:]
            assert events[-1][2]["status"] == "succeeded"
        print(f"submits across the outage: {len(submitted)}, all succeeded")
    finally:
        server.stop()


def test_postgres_restart_during_a_run(make_stack, private_postgres):
    stack = make_stack("sqlite", api=False)
    stack.db = Database(private_postgres.url)
    from common.migrate import upgrade

    upgrade(stack.settings)
    stack.key = stack.new_key()
    stack.start_api()
    stack.start_worker("llm", concurrency=16)
    jobs = [stack.submit(input={"prompt": " ".join(f"p{i}w{k}" for k in range(15))},
                         params={"delay_ms": 150}) for i in range(12)]
    wait_until(lambda: stack.get(jobs[0]["id"])["status"] == "running", 20, "running")

    private_postgres.stop()
    time.sleep(3)
    down = stack.default_client.post("/v1/jobs", json={"model": "debug/echo",
                                                       "input": {"prompt": "db down"}})
    assert down.status_code == 503 and down.headers.get("Retry-After")
    assert down.json()["error"]["type"] == "unavailable"
    private_postgres.start()

    for j in jobs:
        done = stack.wait(j["id"], timeout=90)
        assert done["status"] == "succeeded", (done["status"], done["error"], stack.logs())
        assert done["output"]["text"] == j["input"]["prompt"]
    engine = create_engine(stack.settings.sync_database_url)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM jobs WHERE status NOT IN "
                                 "('succeeded')")).scalar()
    engine.dispose()
    assert left == 0


def test_a_hung_worker_is_replaced_and_its_late_write_refused(make_stack):
    stack = make_stack("postgres")
    hung = stack.start_worker("llm", concurrency=2)
    job = stack.submit(input={"prompt": " ".join(f"h{k}" for k in range(12))},
                       params={"delay_ms": 150})
    stack.events(job["id"], limit=3)  # running, two tokens
    hung.send_signal(signal.SIGSTOP)  # alive but silent: no heartbeat, no progress
    try:
        healthy = stack.start_worker("llm", concurrency=2)
        done = stack.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded" and done["attempts"] == 2
    finally:
        hung.send_signal(signal.SIGCONT)
    # The hung attempt wakes up, finds its lease gone and writes nothing.
    wait_until(lambda: b"lease lost" in hung.log_path.read_bytes()
               or b"result discarded" in hung.log_path.read_bytes(), 20, "fence noticed")
    time.sleep(1)  # let the woken attempt try anything it would still try
    assert stack.get(job["id"]) == done
    assert done["status"] in TERMINAL and healthy.poll() is None
