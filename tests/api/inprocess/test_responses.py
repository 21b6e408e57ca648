"""The Responses API in-process (see conftest.py): what each route answers and writes,
and the typed event stream derived from a job's event log. The job is run by the real
job store and event writer a worker uses (`run`), driven step by step; the same
behaviour through Redis and a real worker, with the official SDK, is
tests/api/test_responses.py. Every answer is checked against OpenAI's schemas."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.jobs import JobStatus
from common.store import JobStore
from tests.api.openai_schema import validate, validate_event
from tests.conftest import parse_sse

WORDS = ["the ", "quick ", "brown ", "fox"]


def run(store: JobStore, job_id: str, words=WORDS, to=JobStatus.SUCCEEDED,
        finish_reason="stop", claim=True) -> None:
    if claim:
        assert store.claim(job_id, worker_id="test-worker") is not None
    for i, w in enumerate(words):
        store.events.token(job_id, w, i)
    output = {"text": "".join(words), "finish_reason": finish_reason,
              "usage": {"prompt_tokens": 3, "completion_tokens": len(words)}}
    error = {"type": "provider_unavailable", "message": "down"} \
        if to == JobStatus.FAILED else None
    assert store.finish(job_id, attempt=1, to=to, output=None if error else output,
                        error=error) is not None


def create(inproc, **body) -> dict:
    body.setdefault("model", "debug/echo")
    body.setdefault("input", "the quick brown fox")
    resp = inproc.client.post("/v1/responses", json=body)
    assert resp.status_code == 200, resp.text
    validate("Response", resp.json())
    return resp.json()


def job_of(resp: dict) -> str:
    return "job_" + resp["id"].removeprefix("resp_")


def stream(inproc, resp_id: str, **params) -> list[dict]:
    with inproc.client.stream("GET", f"/v1/responses/{resp_id}",
                              params={"stream": "true", **params}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = []
        for id_, type_, data in parse_sse(r.iter_lines()):
            assert type_ == data["type"] and id_ == str(data["sequence_number"])
            validate_event(data)
            events.append(data)
        return events


def test_background_response_is_a_queued_job_then_completes(inproc, worker):
    resp = create(inproc, background=True, instructions="be brief", max_output_tokens=50,
                  temperature=0.5, metadata={"k": "v"})
    assert resp["status"] == "queued" and resp["background"] is True
    assert resp["output"] == [] and "usage" not in resp and resp["metadata"] == {"k": "v"}
    assert (resp["instructions"], resp["max_output_tokens"], resp["temperature"]) == \
        ("be brief", 50, 0.5)
    [msg] = inproc.stub.take()
    assert msg.job_id == job_of(resp) and msg.queue == "llm" and msg.priority == "interactive"
    job = inproc.client.get(f"/v1/jobs/{msg.job_id}").json()
    assert job["input"] == {"messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "the quick brown fox"}]}
    assert job["params"]["max_tokens"] == 50
    run(worker, msg.job_id)
    done = inproc.client.get(f"/v1/responses/{resp['id']}").json()
    validate("Response", done)
    assert done["status"] == "completed" and done["completed_at"] >= done["created_at"]
    [item] = done["output"]
    assert item["type"] == "message" and item["status"] == "completed"
    assert item["content"][0]["text"] == "the quick brown fox"
    assert done["usage"]["output_tokens"] == 4 and done["usage"]["total_tokens"] == 7


def test_the_stream_is_the_job_log_and_resumes_after_any_event(inproc, worker):
    resp = create(inproc, background=True)
    run(worker, job_of(resp))
    events = stream(inproc, resp["id"])
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if "delta" in e) == "the quick brown fox"
    assert events[-1]["response"]["status"] == "completed"
    # Resume after each event: exactly the rest, with the same numbers and content.
    for n in range(len(events)):
        assert stream(inproc, resp["id"], starting_after=n) == events[n + 1:]
    # An EventSource's reconnect (Last-Event-ID) resumes the same way.
    with inproc.client.stream("GET", f"/v1/responses/{resp['id']}?stream=true",
                              headers={"Last-Event-ID": "5"}) as r:
        assert [d for _, _, d in parse_sse(r.iter_lines())] == events[6:]


@pytest.mark.parametrize("to, finish_reason, status, last", [
    (JobStatus.SUCCEEDED, "length", "incomplete", "response.incomplete"),
    (JobStatus.FAILED, "stop", "failed", "response.failed"),
    (JobStatus.CANCELLED, "cancelled", "cancelled", "response.cancelled"),
])
def test_each_end_of_a_job_is_one_terminal_event(inproc, worker, to, finish_reason, status,
                                                 last):
    resp = create(inproc, background=True)
    run(worker, job_of(resp), WORDS[:2], to=to, finish_reason=finish_reason)
    events = stream(inproc, resp["id"])
    assert events[-1]["type"] == last and events[-1]["response"]["status"] == status
    assert [e["type"] for e in events].count(last) == 1
    final = inproc.client.get(f"/v1/responses/{resp['id']}").json()
    validate("Response", final)
    assert final["status"] == status
    if status == "failed":
        assert final["error"]["code"] == "server_error"
        assert "provider_unavailable" in final["error"]["message"]
    if status == "incomplete":
        assert final["incomplete_details"] == {"reason": "max_output_tokens"}


def test_cancel_of_a_queued_background_response_is_final(inproc, worker):
    resp = create(inproc, background=True)
    cancelled = inproc.client.post(f"/v1/responses/{resp['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    validate("Response", cancelled.json())
    assert cancelled.json()["status"] == "cancelled"
    # A late worker cannot take it, and a second cancel changes nothing.
    assert worker.claim(job_of(resp), worker_id="late") is None
    assert inproc.client.post(f"/v1/responses/{resp['id']}/cancel").json()["status"] == \
        "cancelled"
    types = [e["type"] for e in stream(inproc, resp["id"])]
    assert types == ["response.created", "response.cancelled"]


def test_cancel_of_a_running_one_waits_for_the_worker(inproc, worker):
    resp = create(inproc, background=True)
    claimed = worker.claim(job_of(resp), worker_id="w")
    assert claimed is not None
    # The worker stops (as its cancel listener would make it) while the cancel waits.
    import threading
    t = threading.Timer(0.3, lambda: run(worker, job_of(resp), WORDS[:1],
                                         to=JobStatus.CANCELLED, claim=False))
    t.start()
    cancelled = inproc.client.post(f"/v1/responses/{resp['id']}/cancel").json()
    t.join()
    assert cancelled["status"] == "cancelled"
    assert cancelled["output"][0]["content"][0]["text"] == "the "


def test_a_foreground_response_cannot_be_cancelled(inproc):
    resp = create(inproc, stream=False, background=True, store=True)
    fg = inproc.client.post("/v1/responses/resp_x/cancel")
    assert fg.status_code == 404
    assert inproc.client.post(f"/v1/responses/{resp['id']}/cancel").status_code == 200


def test_previous_response_id_continues_the_conversation(inproc, worker):
    first = create(inproc, background=True, instructions="first rules",
                   input=[{"role": "user", "content": "hello"}])
    run(worker, job_of(first), ["hi ", "there"])
    second = create(inproc, background=True, previous_response_id=first["id"],
                    input=[{"type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "and then?"}]}])
    assert second["previous_response_id"] == first["id"]
    job = inproc.client.get(f"/v1/jobs/{job_of(second)}").json()
    # Instructions do not carry over; the turns and the answer do.
    assert job["input"]["messages"] == [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "and then?"}]
    items = inproc.client.get(f"/v1/responses/{second['id']}/input_items").json()
    validate("ResponseItemList", items)
    assert [i["content"][0]["text"] for i in items["data"]] == ["and then?"]
    # One not yet completed cannot be continued; an unknown one is 404.
    pending = create(inproc, background=True)
    refused = inproc.client.post("/v1/responses", json={
        "model": "debug/echo", "input": "x", "previous_response_id": pending["id"]})
    assert refused.status_code == 400  # OpenAI's status for a bad request
    assert inproc.client.post("/v1/responses", json={
        "model": "debug/echo", "input": "x",
        "previous_response_id": "resp_nope"}).status_code == 404


def test_input_items_pages(inproc):
    resp = create(inproc, background=True, input=[
        {"role": "user", "content": f"m{i}"} for i in range(5)])
    url = f"/v1/responses/{resp['id']}/input_items"
    desc = inproc.client.get(url, params={"limit": 2}).json()
    assert [i["content"][0]["text"] for i in desc["data"]] == ["m4", "m3"]
    assert desc["has_more"] is True
    rest = inproc.client.get(url, params={"limit": 10, "after": desc["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m1", "m0"]
    asc = inproc.client.get(url, params={"order": "asc"}).json()
    assert [i["content"][0]["text"] for i in asc["data"]] == [f"m{i}" for i in range(5)]
    validate("ResponseItemList", asc)


def test_delete_hides_it_and_cancels_its_job(inproc):
    resp = create(inproc, background=True)
    gone = inproc.client.delete(f"/v1/responses/{resp['id']}")
    assert gone.json() == {"id": resp["id"], "object": "response", "deleted": True}
    for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/input_items"),
                         ("DELETE", "")]:
        assert inproc.client.request(method, f"/v1/responses/{resp['id']}{path}"
                                     ).status_code == 404
    assert inproc.client.get(f"/v1/jobs/{job_of(resp)}").json()["status"] == "cancelled"


def test_another_key_sees_nothing(inproc):
    resp = create(inproc, background=True)
    other = inproc.auth(inproc.new_key("other"))
    for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/input_items"),
                         ("DELETE", "")]:
        r = inproc.client.request(method, f"/v1/responses/{resp['id']}{path}", headers=other)
        assert r.status_code == 404, path
    r = inproc.client.post("/v1/responses", headers=other, json={
        "model": "debug/echo", "input": "x", "previous_response_id": resp["id"]})
    assert r.status_code == 404


# As OpenAI answers: an unknown model is 404 model_not_found, any other bad request 400.
@pytest.mark.parametrize("body, needle, status", [
    ({"tools": [{"type": "function", "name": "f"}]}, "'tools'", 400),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
     "only message items", 400),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "only text parts", 400),
    ({"model": "nope/x"}, "unknown model provider", 404),
    ({"model": "+x"}, "model", 400),
    ({"background": True, "store": False}, "must be stored", 400),
    ({"max_output_tokens": 0}, "max_output_tokens", 400),
    ({"input": []}, "empty", 400),
])
def test_bad_requests_get_4xx_and_no_job(inproc, body, needle, status):
    resp = inproc.client.post("/v1/responses", json={"model": "debug/echo", "input": "x",
                                                     **body})
    assert resp.status_code == status, resp.text
    validate("ErrorResponse", resp.json())
    assert needle in resp.json()["error"]["message"]
    assert inproc.stub.take() == []
    assert inproc.client.get("/v1/jobs").json()["data"] == []


def test_store_false_is_not_kept_for_reading(inproc, worker):
    with inproc.client.stream("POST", "/v1/responses", json={
            "model": "debug/echo", "input": "a b", "store": False, "stream": True}) as r:
        job_id = r.headers["x-monkey-job-id"]
        run(worker, job_id, ["a ", "b"])
        events = [d for _, _, d in parse_sse(r.iter_lines())]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["store"] is False
    assert inproc.client.get(f"/v1/responses/resp_{job_id[4:]}").status_code == 404



def test_a_restarted_attempt_continues_the_text_already_sent(inproc, worker):
    """The worker dies mid-response: the job is requeued (the reconciler's recover) and
    run again from the start. The stream sends only what the new attempt adds."""
    resp = create(inproc, background=True)
    job_id = job_of(resp)
    assert worker.claim(job_id, worker_id="dies") is not None
    for i, w in enumerate(WORDS[:2]):
        worker.events.token(job_id, w, i)
    lapsed = SimpleNamespace(id=job_id, status="running", attempts=1)
    assert inproc.client.portal.call(inproc.state.store.recover, lapsed)
    assert worker.claim(job_id, worker_id="lives") is not None  # attempt 2
    for i, w in enumerate(WORDS):
        worker.events.token(job_id, w, i)
    assert worker.finish(job_id, attempt=2, to=JobStatus.SUCCEEDED, output={
        "text": "".join(WORDS), "finish_reason": "stop"}) is not None
    events = stream(inproc, resp["id"])
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == WORDS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "".join(WORDS)
    for n in (3, 5, 7):
        assert stream(inproc, resp["id"], starting_after=n) == events[n + 1:]
