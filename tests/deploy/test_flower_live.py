"""Flower on a live stack: it sees our worker and our jobs' tasks (readable names, job id
and model, never the prompt), answers its HTTP API only with basic auth, and serves its
own /metrics and /healthcheck."""

from __future__ import annotations

import secrets

import httpx
import pytest

from monkey.embedded import free_port
from tests.conftest import wait_until

PASSWORD = "flower-" + secrets.token_hex(8)


@pytest.fixture
def flower(make_stack):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=4)
    port = free_port()
    proc = stack.spawn(
        "flower",
        ["flower", "--port", str(port), "--address", "127.0.0.1", "--url-prefix", "ops"],
        {"FLOWER_BASIC_AUTH": f"admin:{PASSWORD}"},
    )
    base = f"http://127.0.0.1:{port}/ops"
    client = httpx.Client(base_url=base, auth=("admin", PASSWORD), timeout=10)

    def sees_worker() -> bool:
        try:
            return bool(client.get("/api/workers", params={"refresh": 1}).json())
        except (httpx.HTTPError, ValueError):
            return False

    # Events are not replayed: wait until Flower is connected before any job runs.
    wait_until(sees_worker, 60, "Flower sees the worker", proc, interval=0.5)
    yield stack, client, base, proc
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_flower_lists_jobs_and_workers_behind_basic_auth(flower):
    stack, client, base, proc = flower
    prompt = "secret-prompt-" + secrets.token_hex(4)
    jobs = [stack.submit(input={"prompt": f"{prompt} {i}"}) for i in range(3)]
    for job in jobs:
        assert stack.wait(job["id"])["status"] == "succeeded"

    found = {}

    def tasks_done() -> bool:
        tasks = client.get("/api/tasks").json()
        found["tasks"] = {
            t["uuid"]: t for t in tasks.values() if t.get("name") == "monkey.generate"
        }
        done = {u for u, t in found["tasks"].items() if t["state"] == "SUCCESS"}
        return all(any(u.startswith(job["id"]) for u in done) for job in jobs)

    wait_until(tasks_done, 30, "Flower lists the three tasks as succeeded", proc, interval=0.5)
    raw = client.get("/api/tasks").text
    assert prompt not in raw, "Flower must never see a prompt"
    for task in found["tasks"].values():
        assert "debug/echo" in task["kwargs"]
        # Every event reached it: the API's task-sent (common/producer/wire.py) and the
        # worker's received/started/succeeded (sent in batches by
        # workers.compat.celery_consumer).
        for stamp in ("sent", "received", "started", "succeeded"):
            assert task.get(stamp), f"Flower has no {stamp} time for task {task['uuid']}"
        assert task["sent"] <= task["received"] <= task["started"] <= task["succeeded"]

    workers = client.get("/api/workers").json()
    assert workers, "the llm worker is listed"

    for path in ("/api/tasks", "/api/workers"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 401
        wrong = httpx.get(f"{base}{path}", auth=("admin", "wrong"), timeout=10)
        assert wrong.status_code == 401

    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200
    succeeded = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("flower_events_total{")
        and 'task="monkey.generate"' in line
        and 'type="task-succeeded"' in line
    ]
    assert succeeded and sum(float(line.rsplit(" ", 1)[1]) for line in succeeded) >= len(jobs)
    assert httpx.get(f"{base}/healthcheck", timeout=10).text == "OK"
    assert PASSWORD not in proc.log_path.read_text(errors="replace")
