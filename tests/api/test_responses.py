"""The Responses API driven by the official `openai` SDK in strict mode (every answer
validated against its types), on a real stack: API processes, an llm worker, Redis,
SQLite and Postgres. Raw answers are checked against OpenAI's published schemas too."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.api.openai_schema import validate, validate_event
from tests.conftest import parse_sse, wait_until

PROMPT = "the quick brown fox jumps over the lazy dog"
WORDS = PROMPT.split()


def sdk(url: str, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60,
                         _strict_response_validation=True, **kw)


@pytest.fixture
def client(echo_stack) -> openai.OpenAI:
    return sdk(echo_stack.url, echo_stack.key)


def test_create_plain(client, echo_stack):
    raw = client.responses.with_raw_response.create(model="debug/echo", input=PROMPT,
                                                     instructions="say it back")
    validate("Response", raw.http_response.json())
    resp = raw.parse()
    assert resp.status == "completed" and resp.object == "response"
    assert resp.output_text == "say it back\n" + PROMPT
    assert resp.usage is not None and resp.usage.output_tokens == len(WORDS) + 3
    job = echo_stack.get(raw.headers["x-monkey-job-id"])
    assert job["status"] == "succeeded" and resp.id == "resp_" + job["id"][4:]


def test_create_streamed(client):
    events = list(client.responses.create(model="debug/echo", input=PROMPT, stream=True,
                                          extra_body={"delay_ms": 5}))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3 and "".join(deltas) == PROMPT
    assert events[-1].response.output_text == PROMPT


def test_hanging_up_a_foreground_stream_cancels_its_job(client, echo_stack):
    stream = client.responses.create(model="debug/echo", input=PROMPT, stream=True,
                                     extra_body={"delay_ms": 300})
    got = _read_until(stream, 5)  # up to the first delta, then the client leaves
    job = echo_stack.wait("job_" + got[0].response.id[5:], timeout=15)
    assert job["status"] == "cancelled"
    assert client.responses.retrieve(got[0].response.id).status == "cancelled"


def test_background_then_retrieve_until_completed(client):
    resp = client.responses.create(model="debug/echo", input=PROMPT, background=True,
                                   extra_body={"delay_ms": 20})
    assert resp.status in ("queued", "in_progress") and resp.background
    seen = {resp.status}
    while resp.status in ("queued", "in_progress"):
        resp = client.responses.retrieve(resp.id)
        seen.add(resp.status)
    assert resp.status == "completed" and resp.output_text == PROMPT
    assert "in_progress" in seen or "queued" in seen


def _read_until(stream, n: int) -> list:
    got = []
    for event in stream:
        got.append(event)
        if len(got) == n:
            break
    stream.close()  # the connection drops here
    return got


def test_a_dropped_stream_resumes_with_starting_after(client):
    stream = client.responses.create(model="debug/echo", input=PROMPT, stream=True,
                                     background=True, extra_body={"delay_ms": 100})
    first = _read_until(stream, 6)
    last = first[-1].sequence_number
    rest = list(client.responses.retrieve(first[0].response.id, stream=True,
                                          starting_after=last))
    events = first + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == PROMPT
    assert events[-1].type == "response.completed"
    # Dropping a background stream does not cancel it.
    assert client.responses.retrieve(first[0].response.id).status == "completed"


def test_resume_survives_an_api_restart_and_works_on_another_api(make_stack):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=2)
    first_api = stack.api_proc
    one = sdk(stack.url, stack.key)
    stream = one.responses.create(model="debug/echo", input=PROMPT, stream=True,
                                  background=True, extra_body={"delay_ms": 150})
    got = _read_until(stream, 5)
    stack.start_api()  # a second API process on the same database and Redis
    two = sdk(stack.url, stack.key)
    stack.kill(first_api, signal.SIGKILL)  # the first one dies mid-response
    resp_id = got[0].response.id
    more = _read_until(two.responses.retrieve(resp_id, stream=True,
                                              starting_after=got[-1].sequence_number), 3)
    # ...and a third, started after, picks up where the second left off.
    stack.start_api()
    three = sdk(stack.url, stack.key)
    rest = list(three.responses.retrieve(resp_id, stream=True,
                                         starting_after=more[-1].sequence_number))
    events = got + more + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == PROMPT
    assert events[-1].type == "response.completed"


def test_a_stream_survives_its_worker_dying(make_stack):
    """The worker is killed mid-response; the lease lapses, the job runs again on
    another worker, and the resumed stream carries the text once, in order."""
    stack = make_stack("sqlite")
    doomed = stack.start_worker("llm", concurrency=2)
    client = sdk(stack.url, stack.key)
    stream = client.responses.create(model="debug/echo", input=PROMPT, stream=True,
                                     background=True, extra_body={"delay_ms": 150})
    got = _read_until(stream, 6)  # created, in_progress, item, part, two deltas
    stack.kill(doomed, signal.SIGKILL)
    stack.start_worker("llm", concurrency=2)
    rest = list(client.responses.retrieve(got[0].response.id, stream=True,
                                          starting_after=got[-1].sequence_number))
    events = got + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == PROMPT
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == PROMPT
    assert stack.get("job_" + got[0].response.id[5:])["attempts"] == 2


def test_sigterm_ends_a_stream_with_a_reconnect_hint_and_last_event_id_resumes(make_stack):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=2)
    first_api, first_url = stack.api_proc, stack.url
    stack.start_api()  # the instance the client reconnects to
    seen: list[dict] = []
    with httpx.Client(base_url=first_url, headers={"Authorization": f"Bearer {stack.key}"},
                      timeout=30) as c, c.stream("POST", "/v1/responses", json={
                          "model": "debug/echo", "input": PROMPT, "stream": True,
                          "background": True, "delay_ms": 150}) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "response.output_text.delta":
                    stack.kill(first_api, signal.SIGTERM)
                    break
        tail = list(lines)  # what the server sent before it closed the stream
    assert "retry: 250" in tail
    resp_id = seen[0]["response"]["id"]
    last = max(e["sequence_number"] for e in seen + [json.loads(x[6:]) for x in tail
                                                      if x.startswith("data: ")])
    with stack.client().stream("GET", f"/v1/responses/{resp_id}?stream=true",
                               headers={"Last-Event-ID": str(last)}) as r:
        rest = [d for _, _, d in parse_sse(r.iter_lines())]
    events = seen + [json.loads(x[6:]) for x in tail if x.startswith("data: ")] + rest
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e.get("delta", "") for e in events) == PROMPT
    assert events[-1]["type"] == "response.completed"


def test_raw_stream_events_match_openais_schemas(echo_stack):
    with echo_stack.client().stream("POST", "/v1/responses", json={
            "model": "debug/echo", "input": "one two three", "stream": True}) as r:
        assert r.status_code == 200
        events = [d for _, _, d in parse_sse(r.iter_lines())]
    for event in events:
        validate_event(event)
    assert events[-1]["type"] == "response.completed"


def test_cancel_a_running_background_response(client, echo_stack):
    resp = client.responses.create(model="debug/echo", input=PROMPT, background=True,
                                   extra_body={"delay_ms": 300})
    wait_until(lambda: client.responses.retrieve(resp.id).status == "in_progress", 15,
               "response running")
    cancelled = client.responses.cancel(resp.id)
    assert cancelled.status == "cancelled"
    job = echo_stack.get("job_" + resp.id[5:])
    assert job["status"] == "cancelled"
    assert len(job["output"]["text"].split()) < len(WORDS)  # it stopped early
    # It stays cancelled; cancelling again says so; its stream ends the same way.
    assert client.responses.retrieve(resp.id).status == "cancelled"
    assert client.responses.cancel(resp.id).status == "cancelled"
    lenient = openai.OpenAI(base_url=echo_stack.url + "/v1", api_key=echo_stack.key,
                            max_retries=0)
    events = list(lenient.responses.retrieve(resp.id, stream=True))
    assert [e.type for e in events].count("response.cancelled") == 1
    assert events[-1].type == "response.cancelled"


def test_cancel_of_a_foreground_response_is_refused(client):
    resp = client.responses.create(model="debug/echo", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(resp.id)


def test_previous_response_id_input_items_and_delete(client):
    first = client.responses.create(model="debug/echo", input="hello",
                                    instructions="not carried over")
    second = client.responses.create(model="debug/echo", previous_response_id=first.id,
                                     input=[{"role": "user", "content": "again"}])
    assert second.previous_response_id == first.id
    assert first.output_text == "not carried over\nhello"
    assert second.output_text == "hello\n" + first.output_text + "\nagain"
    items = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["again"]  # type: ignore[union-attr]
    assert client.responses.delete(second.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(second.id)


def test_async_client(echo_stack):
    async def main() -> tuple[str, list[str]]:
        async with openai.AsyncOpenAI(base_url=echo_stack.url + "/v1", api_key=echo_stack.key,
                                      max_retries=0, _strict_response_validation=True) as c:
            resp = await c.responses.create(model="debug/echo", input=PROMPT)
            stream = await c.responses.create(model="debug/echo", input="a b", stream=True)
            return resp.output_text, [e.type async for e in stream]

    text, types = asyncio.run(main())
    assert text == PROMPT and types[-1] == "response.completed"


def test_responses_need_a_key(echo_stack):
    with httpx.Client(base_url=echo_stack.url) as c:
        for method, path in [("POST", "/v1/responses"), ("GET", "/v1/responses/resp_x"),
                             ("DELETE", "/v1/responses/resp_x"),
                             ("POST", "/v1/responses/resp_x/cancel"),
                             ("GET", "/v1/responses/resp_x/input_items")]:
            assert c.request(method, path).status_code == 401, path


def test_a_batch_of_responses_lines(client, echo_stack):
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
              "body": {"model": "debug/echo", "input": f"line {i}",
                       **({"instructions": "first"} if i == 0 else {})}}
             for i in range(3)]
    lines.append({"custom_id": "bad", "method": "POST", "url": "/v1/responses",
                  "body": {"model": "debug/echo", "input": "x", "background": True}})
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    f = client.files.create(file=("responses.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/responses",
                                  completion_window="24h")
    wait_until(lambda: client.batches.retrieve(batch.id).status == "failed", 30,
               "batch refused")  # one bad line fails validation, as OpenAI's
    errors = client.batches.retrieve(batch.id).errors
    assert errors is not None and errors.data is not None
    assert "background is not allowed" in (errors.data[0].message or "")
    f = client.files.create(file=("responses.jsonl", data.rsplit(b"\n", 2)[0] + b"\n"),
                            purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/responses",
                                  completion_window="24h")
    wait_until(lambda: client.batches.retrieve(batch.id).status == "completed", 60,
               "batch completed")
    done = client.batches.retrieve(batch.id)
    assert done.request_counts is not None and done.request_counts.completed == 3
    assert done.output_file_id is not None
    out = [json.loads(line) for line in
           client.files.content(done.output_file_id).content.splitlines()]
    by_id = {line["custom_id"]: line["response"]["body"] for line in out}
    for body in by_id.values():
        validate("Response", body)
        assert body["status"] == "completed"
    assert by_id["r1"]["output"][0]["content"][0]["text"] == "line 1"
    assert by_id["r0"]["instructions"] == "first"
    assert by_id["r0"]["output"][0]["content"][0]["text"] == "first\nline 0"


def test_langchain_chat_openai_on_the_responses_api(echo_stack):
    llm = ChatOpenAI(model="debug/echo", base_url=echo_stack.url + "/v1",
                     api_key=SecretStr(echo_stack.key), use_responses_api=True, max_retries=0)
    answer = llm.invoke([("system", "be brief"), ("human", PROMPT)])
    assert answer.text == "be brief\n" + PROMPT
    assert answer.id is not None and answer.id.startswith("resp_")
    streamed = "".join(chunk.text for chunk in llm.stream(PROMPT))
    assert streamed == PROMPT
