"""The OpenAI-compatible surface driven by the official `openai` SDK, on both databases:
chat completions (streamed and not), embeddings, files."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.openai_schema import validate

PROMPT = "the quick brown fox jumps over the lazy dog"
WORDS = PROMPT.split()


def sdk(stack, key: str | None = None) -> openai.OpenAI:
    # Strict: every answer must parse as the SDK's own types of OpenAI's API.
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key or stack.key, max_retries=0,
                         timeout=60, _strict_response_validation=True)


def test_chat_completion_non_streamed(echo_stack):
    client = sdk(echo_stack)
    resp = client.chat.completions.with_raw_response.create(
        model="debug/echo", messages=[{"role": "user", "content": PROMPT}])
    completion = resp.parse()
    assert completion.object == "chat.completion" and completion.model == "debug/echo"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == PROMPT
    assert choice.finish_reason == "stop" and choice.index == 0
    assert completion.usage.prompt_tokens == len(WORDS)
    assert completion.usage.completion_tokens == len(WORDS)
    assert completion.usage.total_tokens == 2 * len(WORDS)
    # The request was a job on the queue, like any other.
    job = echo_stack.get(resp.headers["x-monkey-job-id"])
    assert job["status"] == "succeeded" and job["priority"] == "interactive"
    assert completion.id == f"chatcmpl-{job['id']}"


def test_chat_completion_params_reach_the_job(echo_stack):
    client = sdk(echo_stack)
    c = client.chat.completions.create(
        model="debug/echo", max_tokens=3, temperature=0.5, seed=1,
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": PROMPT}]}])
    assert c.choices[0].finish_reason == "length"
    assert c.choices[0].message.content == "be brief\nthe "
    c = client.chat.completions.create(model="debug/echo", stop=["fox"],
                                       messages=[{"role": "user", "content": PROMPT}])
    assert c.choices[0].message.content == "the quick brown "


def test_chat_completion_streamed_with_usage(echo_stack):
    client = sdk(echo_stack)
    stream = client.chat.completions.create(
        model="debug/echo", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}, extra_body={"delay_ms": 5})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PROMPT
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    # The usage chunk comes last, with no choices; the others carry usage null.
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(WORDS)
    assert all(c.usage is None for c in chunks[:-1])
    # Several token chunks: the text really streamed.
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3


def test_chat_stream_without_usage_and_raw_sse(echo_stack):
    with echo_stack.client().stream("POST", "/v1/chat/completions", json={
            "model": "debug/echo", "stream": True,
            "messages": [{"role": "user", "content": "one two"}]}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert '"usage"' not in "".join(lines)


def test_hanging_up_a_stream_cancels_its_job(echo_stack):
    with echo_stack.client().stream("POST", "/v1/chat/completions", json={
            "model": "debug/echo", "stream": True, "delay_ms": 300,
            "messages": [{"role": "user", "content": PROMPT}]}) as resp:
        job_id = resp.headers["x-monkey-job-id"]
        for line in resp.iter_lines():
            if '"content":"the' in line:
                break
    done = echo_stack.wait(job_id, timeout=15)
    assert done["status"] == "cancelled"
    assert len(done["output"]["text"].split()) < len(WORDS)


@pytest.mark.parametrize("kwargs, error, needle, param, code", [
    # As OpenAI answers: an unknown model is 404 model_not_found, the rest 400.
    ({"model": "nope/x"}, openai.NotFoundError, "unknown model provider", "model",
     "model_not_found"),
    ({"model": "gpt-4o"}, openai.NotFoundError, "PROVIDER/NAME", "model", "model_not_found"),
    ({"model": "local/all-MiniLM-L6-v2"}, openai.BadRequestError, "does not serve", "model",
     None),
    ({"model": "debug/echo", "n": 2}, openai.BadRequestError, "'n'", "n",
     "unsupported_parameter"),
    ({"model": "debug/echo", "tools": [{"type": "function", "function": {"name": "f"}}]},
     openai.BadRequestError, "'tools'", "tools", "unsupported_parameter"),
    ({"model": "debug/echo", "max_tokens": 0}, openai.BadRequestError, "max_tokens", None, None),
])
def test_bad_chat_requests_answer_as_openai_and_make_no_job(echo_stack, kwargs, error, needle,
                                                            param, code):
    client = sdk(echo_stack, echo_stack.new_key("bad-chat"))
    with pytest.raises(error) as err:
        client.chat.completions.create(messages=[{"role": "user", "content": "x"}], **kwargs)
    validate("ErrorResponse", err.value.response.json())
    body = err.value.body
    assert needle in body["message"]
    assert body["type"] == "invalid_request" and body["code"] == code
    if param:
        assert body["param"] == param
    c = echo_stack.client(client.api_key)
    assert c.get("/v1/jobs").json()["data"] == []


def test_openai_routes_need_a_key(echo_stack):
    with pytest.raises(openai.AuthenticationError):
        sdk(echo_stack, "mk-wrong").chat.completions.create(
            model="debug/echo", messages=[{"role": "user", "content": "x"}])
    with httpx.Client(base_url=echo_stack.url) as c:
        for method, path in [("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings"),
                             ("POST", "/v1/files"), ("GET", "/v1/files/file_x"),
                             ("GET", "/v1/files/file_x/content"), ("POST", "/v1/batches"),
                             ("GET", "/v1/batches"), ("GET", "/v1/batches/batch_x"),
                             ("POST", "/v1/batches/batch_x/cancel")]:
            assert c.request(method, path).status_code == 401, path


def test_files_upload_read_and_isolation(echo_stack):
    client = sdk(echo_stack)
    data = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n' * 3
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.object == "file" and f.bytes == len(data) and f.filename == "in.jsonl"
    assert f.purpose == "batch"
    assert client.files.retrieve(f.id).bytes == len(data)
    assert client.files.content(f.id).content == data
    assert f.id in [x.id for x in client.files.list()]
    other = sdk(echo_stack, echo_stack.new_key("other-files"))
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(f.id)
    # Refused as OpenAI refuses a bad request: 400 (the native API's 422).
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", data), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b""), purpose="batch")
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_file_over_the_limit_gets_413_and_is_not_kept(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_MAX_FILE_BYTES": "100000"})
    client = sdk(stack)
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", b"x" * 100_001), purpose="batch")
    assert err.value.status_code == 413
    assert client.files.create(file=("ok.jsonl", b"x" * 100_000), purpose="batch").bytes == \
        100_000
    assert len(client.files.list().data) == 1


def test_embeddings_float_and_base64(make_stack):
    """Needs the gpu worker with local/all-MiniLM-L6-v2 (the local runtime)."""
    stack = make_stack("sqlite")
    stack.start_worker("gpu", concurrency=8, timeout=180)
    client = sdk(stack)
    one = client.embeddings.create(model="local/all-MiniLM-L6-v2", input="hello world",
                                   encoding_format="float")
    assert one.object == "list" and len(one.data) == 1
    assert len(one.data[0].embedding) == 384 and one.usage.prompt_tokens > 0
    # The SDK asks for base64 by default and decodes it itself, after parsing: its strict
    # mode would refuse OpenAI's own base64 answer (a string where it types floats).
    lax = openai.OpenAI(base_url=client.base_url, api_key=client.api_key, max_retries=0)
    many = lax.embeddings.create(model="local/all-MiniLM-L6-v2",
                                 input=["hello world", "a monkey types"])
    assert [d.index for d in many.data] == [0, 1]
    assert all(len(d.embedding) == 384 for d in many.data)
    assert many.data[0].embedding == pytest.approx(one.data[0].embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="local/all-MiniLM-L6-v2", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="debug/echo", input="x")


def test_a_failed_job_answers_as_an_openai_error(make_stack):
    # A hosted model whose provider cannot be reached: the job fails when it runs.
    stack = make_stack("sqlite", env={"OPENAI_API_KEY": "sk-test",
                                      "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                      "MONKEY_PROVIDER_MAX_RETRIES": "0"})
    stack.start_worker("llm", concurrency=2)
    client = sdk(stack)
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages)
    assert err.value.status_code == 503
    assert err.value.body["type"] == "provider_unavailable"
    job = stack.get(err.value.response.headers["x-monkey-job-id"])
    assert job["status"] == "failed" and job["error"]["type"] == "provider_unavailable"
    stream = client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages,
                                            stream=True)
    with pytest.raises(openai.APIError) as err:
        list(stream)
    assert err.value.body["type"] == "provider_unavailable"
