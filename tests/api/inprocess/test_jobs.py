"""The native job routes in-process (see conftest.py): what each answers, what it
writes, and what it hands the broker. The same behaviour end to end, through Redis
and a worker, is tests/api/test_jobs.py."""

from __future__ import annotations

import threading
import time

import pytest

from common.jobs import JobStatus
from common.producer import TaskMessage

BODY = {"model": "debug/echo", "input": {"prompt": "once only"}}


@pytest.mark.parametrize("body, queue", [
    ({"model": "debug/echo", "input": {"prompt": "hi"}}, "llm"),
    ({"model": "local/all-MiniLM-L6-v2", "kind": "embed", "input": {"texts": ["hi"]},
      "priority": "batch"}, "gpu"),
], ids=["generate", "embed"])
def test_submit_answers_202_with_the_envelope_and_sends_one_task(inproc, body, queue):
    resp = inproc.client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["object"] == "job" and job["status"] == "queued" and job["attempts"] == 0
    assert (job["model"], job["input"]) == (body["model"], body["input"])
    assert inproc.stub.messages == [TaskMessage(
        job_id=job["id"], kind=job["kind"], model=body["model"], queue=queue,
        priority=body.get("priority", "interactive"), attempt_hint=0)]
    assert inproc.client.get(f"/v1/jobs/{job['id']}").json() == job


def test_idempotency_key_replays_the_job_and_refuses_another_body(inproc):
    key = {"Idempotency-Key": "k-1"}
    first = inproc.client.post("/v1/jobs", json=BODY, headers=key)
    again = inproc.client.post("/v1/jobs", json=BODY, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    other = inproc.client.post("/v1/jobs", json={**BODY, "input": {"prompt": "another"}},
                               headers=key)
    assert other.status_code == 409 and other.json()["error"]["type"] == "conflict"
    assert [m.job_id for m in inproc.stub.take()] == [first.json()["id"]]  # sent once
    # The same Idempotency-Key under another API key is another job.
    theirs = inproc.client.post("/v1/jobs", json=BODY,
                                headers={**key, **inproc.auth(inproc.new_key("other"))})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_another_keys_job_is_404_everywhere(inproc):
    job = inproc.submit()
    intruder = inproc.auth(inproc.new_key("intruder"))
    for method, path in [("GET", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
                         ("GET", f"/v1/jobs/{job['id']}/events")]:
        resp = inproc.client.request(method, path, headers=intruder)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["error"]["type"] == "not_found"
    assert inproc.client.get("/v1/jobs", headers=intruder).json()["data"] == []
    assert inproc.client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"


def test_cancel_of_a_queued_job_is_immediate_and_ends_its_stream(inproc):
    job = inproc.submit()
    resp = inproc.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202
    cancelled = resp.json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    events = inproc.events(job["id"])
    assert [(t, d.get("status")) for _, t, d in events] == [("status", "cancelled"),
                                                            ("done", "cancelled")]
    assert events[-1][2] == cancelled == inproc.client.get(f"/v1/jobs/{job['id']}").json()
    # Again is harmless; the job stays cancelled and nothing more is sent.
    assert inproc.client.post(f"/v1/jobs/{job['id']}/cancel").json() == cancelled
    assert len(inproc.stub.messages) == 1


def test_submit_while_the_broker_is_down_still_answers_202(inproc):
    inproc.stub.broker_down = True
    job = inproc.submit()
    assert job["status"] == "queued"
    assert inproc.stub.messages == []  # left for the reconciler


@pytest.mark.parametrize("body, needle", [
    ({"model": "nope/thing", "input": {"prompt": "x"}}, "unknown model provider"),
    ({"model": "debug/nope", "input": {"prompt": "x"}}, "there are debug/echo and debug/embed"),
    ({"model": "local/unknown", "input": {"prompt": "x"}}, "MONKEY_LOCAL_MODELS"),
    ({"model": "openai/gpt-4o", "input": {"prompt": "x"}}, "OPENAI_API_KEY"),
    ({"model": "debug/echo", "kind": "embed", "input": {"texts": ["x"]}}, "does not serve"),
    ({"model": "debug/echo", "input": {}}, "exactly one of"),
    ({"model": "debug/echo", "input": {"prompt": 5}}, "string"),
    ({"model": "debug/echo", "input": {"prompt": "x"}, "params": {"max_tokens": 0}}, "max_tokens"),
    ({"model": "debug/echo", "input": {"prompt": "x"}, "params": {"temperature": "hot"}},
     "temperature"),
    ({"model": "debug/echo", "input": {"prompt": "x"}, "surprise": 1}, "surprise"),
    ({"input": {"prompt": "x"}}, "model"),
])
def test_bad_requests_get_422_and_change_nothing(inproc, body, needle):
    resp = inproc.client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request" and needle in err["message"], err
    assert inproc.client.get("/v1/jobs").json()["data"] == []
    assert inproc.stub.messages == []


def test_list_filters_by_model_priority_and_batch(inproc):
    echo = inproc.submit()
    low = inproc.submit(priority="batch")
    local = inproc.submit(model="local/all-MiniLM-L6-v2", kind="embed", input={"texts": ["a"]})

    def ids(**params) -> list[str]:
        resp = inproc.client.get("/v1/jobs", params=params)
        assert resp.status_code == 200, resp.text
        return [j["id"] for j in resp.json()["data"]]

    assert ids(model="debug/echo") == [low["id"], echo["id"]]
    assert ids(model="local/all-MiniLM-L6-v2") == [local["id"]]
    assert ids(priority="interactive") == [local["id"], echo["id"]]
    assert ids(priority="batch", model="debug/echo") == [low["id"]]
    assert ids(batch_id="batch_none") == []
    assert inproc.client.get("/v1/jobs", params={"priority": "urgent"}).status_code == 422


def test_models_say_what_they_are_and_which_params_they_take(inproc):
    models = {m["id"]: m for m in inproc.client.get("/v1/models").json()["data"]}
    echo, embed = models["debug/echo"], models["local/all-MiniLM-L6-v2"]
    assert "delay_ms" in echo["params"] and "prompt back" in echo["description"]
    assert embed["params"] == [] and "Embedding" in embed["description"]
    sampling = {"max_tokens", "temperature", "top_p", "stop", "seed"}
    assert set(models["openai/*"]["params"]) >= sampling


def test_a_queued_jobs_position_counts_the_jobs_ahead_of_it(inproc):
    # The stub producer publishes nothing to a worker: every job stays queued.
    first = inproc.submit(model="local/all-MiniLM-L6-v2", kind="embed", input={"texts": ["a"]})
    low = inproc.submit(model="local/all-MiniLM-L6-v2", kind="embed", input={"texts": ["b"]},
                        priority="batch")
    second = inproc.submit(model="local/all-MiniLM-L6-v2", kind="embed", input={"texts": ["c"]})
    echo = inproc.submit()  # another queue

    def ahead(job) -> int | None:
        resp = inproc.client.get(f"/v1/jobs/{job['id']}/position")
        assert resp.status_code == 200, resp.text
        return resp.json()["ahead"]

    # Counted across keys: other tests' queued jobs on this queue are ahead too, so
    # the figures are compared with each other. A batch job waits for every interactive one.
    base, low_ahead = ahead(first), ahead(low)
    assert ahead(second) == base + 1 and low_ahead >= base + 2 and ahead(echo) is not None
    inproc.client.post(f"/v1/jobs/{first['id']}/cancel")
    assert (ahead(first), ahead(second), ahead(low)) == (None, base, low_ahead - 1)
    assert inproc.client.get("/v1/jobs/job_nope/position").status_code == 404


# Prefer: wait=N. The job is run by the real job store a worker uses (`worker`), from a
# thread while the submit waits.

def finish_soon(inproc, worker, delay_s: float = 0.3) -> threading.Thread:
    """Once the next job is sent to the broker, wait `delay_s`, then run it to its end."""
    sent = len(inproc.stub.messages)

    def later() -> None:
        deadline = time.monotonic() + 5
        while len(inproc.stub.messages) == sent and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay_s)
        job_id = inproc.stub.messages[-1].job_id
        assert worker.claim(job_id, worker_id="test-worker") is not None
        worker.events.token(job_id, "hi", 0)
        assert worker.finish(job_id, attempt=1, to=JobStatus.SUCCEEDED, output={
            "text": "hi", "finish_reason": "stop"}) is not None

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def test_prefer_wait_answers_200_with_the_finished_job(inproc, worker):
    thread = finish_soon(inproc, worker)
    started = time.monotonic()
    resp = inproc.client.post("/v1/jobs", json=BODY, headers={"Prefer": "wait=10"})
    thread.join()
    assert resp.status_code == 200, resp.text
    assert time.monotonic() - started < 5  # it answered when the job ended
    job = resp.json()
    assert job["status"] == "succeeded" and job["output"]["text"] == "hi"
    assert resp.headers["preference-applied"] == "wait=10"
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert inproc.client.get(f"/v1/jobs/{job['id']}").json() == job


def test_prefer_wait_answers_202_with_the_job_still_going(inproc, worker, monkeypatch):
    # The wait follows the job's event log: the database is read once, at the end.
    store = inproc.state.store
    reads: list[str] = []
    for name in ("get", "final_envelope"):
        real = getattr(store, name)

        async def counted(*a, _real=real, _name=name, **kw):
            reads.append(_name)
            return await _real(*a, **kw)
        monkeypatch.setattr(store, name, counted)
    started = time.monotonic()
    resp = inproc.client.post("/v1/jobs", json=BODY, headers={"Prefer": "respond-async, wait=1"})
    waited = time.monotonic() - started
    assert resp.status_code == 202, resp.text
    assert 1 <= waited < 3
    assert resp.json()["status"] == "queued" and resp.headers["preference-applied"] == "wait=1"
    assert reads == ["get"]
    # A running job (the same request again, by its Idempotency-Key) answers as running.
    key = {"Idempotency-Key": "wait-running"}
    job = inproc.client.post("/v1/jobs", json=BODY, headers=key).json()
    assert worker.claim(job["id"], worker_id="w") is not None
    again = inproc.client.post("/v1/jobs", json=BODY, headers={**key, "Prefer": "wait=1"})
    assert again.status_code == 202 and again.json()["status"] == "running"


@pytest.mark.parametrize("prefer, applied", [
    ("wait=600", "wait=60"), ("wait", "wait=60"), ("WAIT = 7", "wait=7"),
    ("handling=lenient; wait=3", None), ("wait=soon", None), ("wait=0", None),
    ("respond-async", None),
])
def test_prefer_wait_is_capped_and_anything_else_ignored(inproc, worker, prefer, applied):
    thread = finish_soon(inproc, worker, 0.1) if applied else None
    resp = inproc.client.post("/v1/jobs", json=BODY, headers={"Prefer": prefer})
    if thread:
        thread.join()
    assert resp.headers.get("preference-applied") == applied
    assert resp.status_code == (200 if applied else 202), resp.text
    assert resp.json()["status"] == ("succeeded" if applied else "queued")


def test_prefer_wait_replays_a_finished_job_at_once(inproc, worker):
    key = {"Idempotency-Key": "wait-1"}
    job = inproc.client.post("/v1/jobs", json=BODY, headers=key).json()
    assert worker.claim(job["id"], worker_id="w") is not None
    worker.finish(job["id"], attempt=1, to=JobStatus.SUCCEEDED, output={"text": "x"})
    resp = inproc.client.post("/v1/jobs", json=BODY, headers={**key, "Prefer": "wait=30"})
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded"
    # With an event stream asked for, `wait` is not applied.
    with inproc.client.stream("POST", "/v1/jobs", json={**BODY, "input": {"prompt": "s"}},
                              headers={"Accept": "text/event-stream", "Prefer": "wait=1"}
                              ) as streamed:
        assert streamed.status_code == 202
        assert "preference-applied" not in streamed.headers
