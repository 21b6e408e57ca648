"""The native job API end to end: HTTP -> Postgres/SQLite -> Redis -> Celery worker ->
Redis stream -> SSE, on both databases."""

from __future__ import annotations

import httpx
import pytest

WORDS = "the quick brown fox jumps over the lazy dog again and again".split()
PROMPT = " ".join(WORDS)


def test_echo_job_runs_and_streams_every_token(echo_stack):
    job = echo_stack.submit(input={"prompt": PROMPT}, params={"delay_ms": 5})
    assert job["status"] == "queued" and job["object"] == "job" and job["attempts"] == 0

    events = echo_stack.events(job["id"])
    types = [t for _, t, _ in events]
    assert types[0] == "status" and events[0][2]["status"] == "running"
    assert types[-1] == "done" and types[-2] == "status"
    assert events[-2][2]["status"] == "succeeded"
    streamed = "".join(d["text"] for _, t, d in events if t == "token")
    assert streamed == PROMPT
    # Event ids increase strictly: a client can resume from any of them.
    ids = [i for i, _, _ in events]
    assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    done = events[-1][2]
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["output"] == {
        "text": PROMPT, "finish_reason": "stop",
        "usage": {"prompt_tokens": len(WORDS), "completion_tokens": len(WORDS),
                  "total_tokens": 2 * len(WORDS)},
    }
    m = done["metrics"]
    assert m["completion_tokens"] == len(WORDS) and m["ttft_ms"] > 0 and m["run_ms"] > 0
    assert m["queue_ms"] >= 0 and m["tokens_per_s"] > 0
    assert echo_stack.get(job["id"]) == done
    # The stream of a finished job sends everything again and closes.
    assert echo_stack.events(job["id"]) == events


def test_sse_resumes_from_last_event_id_without_loss_or_repeat(echo_stack):
    job = echo_stack.submit(input={"prompt": PROMPT}, params={"delay_ms": 40})
    first = echo_stack.events(job["id"], limit=4)
    assert [t for _, t, _ in first][:1] == ["status"]
    rest = echo_stack.events(job["id"], last_event_id=first[-1][0])
    assert rest[-1][1] == "done"
    whole = echo_stack.events(job["id"])
    assert first + rest == whole
    assert "".join(d["text"] for _, t, d in first + rest if t == "token") == PROMPT


def test_prefer_wait_answers_the_finished_job_or_the_one_still_running(echo_stack):
    client = echo_stack.default_client
    body = {"model": "debug/echo", "input": {"prompt": PROMPT}}
    done = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=20"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["output"]["text"] == PROMPT
    assert done.headers["preference-applied"] == "wait=20"
    slow = client.post("/v1/jobs", json={**body, "params": {"delay_ms": 300}},
                       headers={"Prefer": "wait=1"})
    assert slow.status_code == 202, slow.text
    assert slow.json()["status"] in ("queued", "running")
    assert echo_stack.wait(slow.json()["id"])["status"] == "succeeded"


def test_max_tokens_and_stop(echo_stack):
    job = echo_stack.submit(input={"prompt": PROMPT}, params={"max_tokens": 3})
    done = echo_stack.wait(job["id"])
    assert done["output"]["text"] == "the quick brown "
    assert done["output"]["finish_reason"] == "length"
    job = echo_stack.submit(input={"messages": [{"role": "user", "content": PROMPT}]},
                            params={"stop": ["jumps"]})
    done = echo_stack.wait(job["id"])
    assert done["output"]["text"] == "the quick brown fox "
    assert done["output"]["finish_reason"] == "stop"


def test_cancel_queued_job_is_immediate(echo_stack):
    # local/* runs on the gpu queue, which has no worker in this stack: the job waits.
    job = echo_stack.submit(model="local/all-MiniLM-L6-v2", kind="embed",
                            input={"texts": ["hello"]})
    resp = echo_stack.client().post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    assert resp.json()["status"] == "cancelled"
    events = echo_stack.events(job["id"])
    assert [t for _, t, _ in events] == ["status", "done"]
    assert events[-1][2]["status"] == "cancelled"
    # Cancelling again is harmless; the job stays cancelled.
    assert echo_stack.client().post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_cancel_running_job_keeps_partial_text(echo_stack):
    job = echo_stack.submit(input={"prompt": PROMPT}, params={"delay_ms": 300})
    seen = echo_stack.events(job["id"], limit=3)  # running + two tokens
    assert [t for _, t, _ in seen] == ["status", "token", "token"]
    resp = echo_stack.client().post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    assert resp.json()["status"] in ("cancelling", "cancelled")
    done = echo_stack.wait(job["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert done["output"]["finish_reason"] == "cancelled"
    text = done["output"]["text"]
    assert PROMPT.startswith(text) and 2 <= len(text.split()) < len(WORDS)
    statuses = [d["status"] for _, t, d in echo_stack.events(job["id"]) if t == "status"]
    assert statuses == ["running", "cancelling", "cancelled"]
    # A finished job cannot be cancelled.
    ok = echo_stack.submit(input={"prompt": "hi"})
    echo_stack.wait(ok["id"])
    resp = echo_stack.client().post(f"/v1/jobs/{ok['id']}/cancel")
    assert resp.status_code == 409 and resp.json()["error"]["type"] == "conflict"


def test_timeout_fails_the_job(echo_stack):
    job = echo_stack.submit(input={"prompt": PROMPT}, params={"delay_ms": 200}, timeout_s=0.5)
    done = echo_stack.wait(job["id"], timeout=10)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "timeout"


def test_start_by_expires_a_job_no_worker_took(echo_stack):
    job = echo_stack.submit(model="local/all-MiniLM-L6-v2", kind="embed",
                            input={"texts": ["x"]}, start_by_s=0.3)
    done = echo_stack.wait(job["id"], timeout=10)
    assert done["status"] == "expired" and done["error"]["type"] == "expired"
    assert echo_stack.events(job["id"])[-1][2]["status"] == "expired"


def test_idempotency_key(echo_stack):
    c = echo_stack.client()
    body = {"model": "debug/echo", "input": {"prompt": "once only"}}
    a = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    b = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"]
    other = c.post("/v1/jobs", json={**body, "input": {"prompt": "another"}},
                   headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and other.json()["error"]["type"] == "conflict"
    # The same key under another API key is another job.
    c2 = echo_stack.client(echo_stack.new_key("other"))
    d = c2.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert d.status_code == 202 and d.json()["id"] != a.json()["id"]


def test_keys_see_only_their_own_jobs(echo_stack):
    job = echo_stack.submit(input={"prompt": "mine"})
    other = echo_stack.client(echo_stack.new_key("intruder"))
    for method, path in [("GET", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
                         ("GET", f"/v1/jobs/{job['id']}/events")]:
        resp = other.request(method, path)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["error"]["type"] == "not_found"
    assert job["id"] not in [j["id"] for j in other.get("/v1/jobs").json()["data"]]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer mk-wrong"},
                                     {"Authorization": "Basic abc"}])
def test_requests_without_a_valid_key_get_401(echo_stack, headers):
    with httpx.Client(base_url=echo_stack.url, headers=headers) as c:
        for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/models"),
                             ("GET", "/v1/queues"), ("GET", "/v1/jobs/job_x")]:
            resp = c.request(method, path, json={} if method == "POST" else None)
            assert resp.status_code == 401, (path, resp.text)
            assert resp.json()["error"]["type"] == "unauthorized"
            assert "monkey keys create" in resp.json()["error"]["message"]


def test_malformed_json_gets_422(echo_stack):
    resp = echo_stack.client().post("/v1/jobs", content=b"{not json",
                                    headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"]["type"] == "invalid_request"


def test_oversized_prompt_and_body_get_413(echo_stack):
    c = echo_stack.client()
    resp = c.post("/v1/jobs", json={"model": "debug/echo", "input": {"prompt": "x" * 200_001}})
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "payload_too_large"
    assert "MONKEY_MAX_PROMPT_CHARS" in resp.json()["error"]["message"]
    resp = c.post("/v1/jobs", json={"model": "debug/echo", "input": {"prompt": "x" * 1_100_000}})
    assert resp.status_code == 413


def test_list_pages_with_a_cursor_and_filters(echo_stack):
    c = echo_stack.client(echo_stack.new_key("lister"))
    ids = [echo_stack.submit(c, input={"prompt": f"n{i}"})["id"] for i in range(5)]
    for i in ids:
        echo_stack.wait(i, client=c)  # statuses settle before filtering
    page1 = c.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page1["data"]] == ids[::-1][:2] and page1["has_more"]
    page2 = c.get("/v1/jobs", params={"limit": 2, "after": page1["last_id"]}).json()
    page3 = c.get("/v1/jobs", params={"limit": 2, "after": page2["last_id"]}).json()
    assert [j["id"] for j in page2["data"] + page3["data"]] == ids[::-1][2:]
    assert not page3["has_more"]
    done = c.get("/v1/jobs", params={"status": "succeeded", "kind": "generate"}).json()
    assert {j["id"] for j in done["data"]} == set(ids)
    assert c.get("/v1/jobs", params={"status": "failed"}).json()["data"] == []
    assert c.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_models_queues_health_and_metrics(echo_stack):
    c = echo_stack.client()
    models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    assert models["debug/echo"]["configured"] and models["debug/echo"]["kinds"] == ["generate"]
    assert models["local/all-MiniLM-L6-v2"]["kinds"] == ["embed"]
    assert not models["openai/*"]["configured"] and "OPENAI_API_KEY" in models["openai/*"]["hint"]
    queues = {q["queue"]: q for q in c.get("/v1/queues").json()["data"]}
    assert queues["llm"]["workers"] == 1 and queues["gpu"]["workers"] == 0
    assert set(queues["llm"]["priorities"]) == {"interactive", "batch"}
    assert httpx.get(f"{echo_stack.url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{echo_stack.url}/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    text = httpx.get(f"{echo_stack.url}/metrics").text
    assert 'monkey_jobs_submitted_total{kind="generate",model="debug/echo"' in text
    assert "monkey_queue_depth" in text
