"""The ML service scaled to zero and back: `monkey ml-service` serves its health while
its worker sleeps or runs; the control process wakes it through ML_SERVICE_URL when a
gpu job waits and no gpu worker is alive; the worker goes back to sleep when idle, and
only a new wake starts it again. Also measures the cold start (submit to first token)."""

from __future__ import annotations

import json
import time

import httpx

from monkey.embedded import free_port
from tests.conftest import parse_sse, wait_until
from workers.runtimes.local.tiny import build_tiny_lm


def health(port: int) -> dict | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except httpx.HTTPError:
        return None


def submit_until_first_token(stack, body: dict) -> tuple[str, float]:
    """POST /v1/jobs following its events; (job id, seconds from submit to first token)."""
    started = time.monotonic()
    headers = {"Accept": "text/event-stream"}
    with stack.client(timeout=120).stream("POST", "/v1/jobs", json=body,
                                          headers=headers) as resp:
        assert resp.status_code in (200, 202), resp.read()
        job_id = None
        for _id, type_, data in parse_sse(resp.iter_lines()):
            job_id = job_id or data.get("id") or data.get("job_id")
            if type_ == "token":
                return job_id or resp.headers.get("x-job-id", ""), time.monotonic() - started
    raise AssertionError("no token event")


def test_api_wakes_the_sleeping_ml_service_and_the_gpu_job_completes(make_stack, tmp_path):
    tiny = build_tiny_lm(tmp_path / "tiny")
    port = free_port()
    stack = make_stack("sqlite", env={
        "MONKEY_LOCAL_MODELS": f"tiny={tiny}", "MONKEY_DEVICE": "cpu",
        "ML_SERVICE_URL": f"http://127.0.0.1:{port}", "MONKEY_WAKE_INTERVAL_S": "5",
    })
    ml = stack.spawn("ml-service", ["ml-service", "--port", str(port), "--idle-exit", "2"])
    wait_until(lambda: health(port) is not None, 30, "ml service health", ml)
    assert health(port)["status"] == "sleeping"  # nothing waited at its start

    body = {"model": "local/tiny", "input": {"prompt": "the monkey"},
            "params": {"max_tokens": 8}}
    job_id, cold = submit_until_first_token(stack, body)
    print(json.dumps({"cold_start_submit_to_first_token_s": round(cold, 2)}))
    wait_until(lambda: stack.get(job_id)["status"] == "succeeded", 60, "the gpu job done", ml)
    state = health(port)
    assert state["starts"] == 1 and state["wakes"] >= 1, state

    # Idle: the worker exits 0, the service sleeps and stays up.
    wait_until(lambda: (health(port) or {}).get("status") == "sleeping", 30, "back to sleep", ml)
    assert health(port)["last_exit_code"] == 0
    assert ml.poll() is None

    # A new gpu job: woken again, a second start.
    job = stack.submit(**body)
    assert stack.wait(job["id"], timeout=90)["status"] == "succeeded"
    assert health(port)["starts"] == 2
