"""Prometheus metrics of the API and of a worker, with the right counts after some jobs."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from monkey.embedded import free_port


def samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_api_and_worker_metrics_count_jobs(make_stack):
    stack = make_stack("sqlite")
    port = free_port()
    stack.start_worker("llm", concurrency=4, extra_env={"MONKEY_METRICS_PORT": str(port)})
    ok = [stack.submit(input={"prompt": f"one two {i}"}) for i in range(3)]
    slow = stack.submit(input={"prompt": "a b c d e f g h"}, params={"delay_ms": 300},
                        timeout_s=0.4)
    queued = stack.submit(model="local/all-MiniLM-L6-v2", kind="embed", input={"texts": ["q"]})
    for j in ok + [slow]:
        stack.wait(j["id"])

    worker = samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    labels = {"kind": "generate", "model": "debug/echo"}
    assert value(worker, "monkey_jobs_total", status="succeeded", **labels) == 3
    assert value(worker, "monkey_jobs_total", status="failed", **labels) == 1
    assert value(worker, "monkey_job_errors_total", model="debug/echo", type="timeout") == 1
    assert value(worker, "monkey_job_run_seconds_count", **labels) == 4
    assert value(worker, "monkey_job_queue_wait_seconds_count", queue="llm") == 4
    assert value(worker, "monkey_time_to_first_token_seconds_count", model="debug/echo") == 4
    assert value(worker, "monkey_tokens_per_second_count", model="debug/echo") == 4

    api = samples(httpx.get(f"{stack.url}/metrics").text)
    assert value(api, "monkey_jobs_submitted_total", kind="generate", model="debug/echo",
                 priority="interactive") == 4
    assert value(api, "monkey_jobs_submitted_total", kind="embed",
                 model="local/all-MiniLM-L6-v2", priority="interactive") == 1
    assert value(api, "monkey_queue_depth", queue="gpu", priority="interactive") == 1
    assert value(api, "monkey_queue_oldest_age_seconds", queue="gpu", priority="interactive") > 0
    assert value(api, "monkey_workers", queue="llm") == 1
    assert queued["status"] == "queued"
