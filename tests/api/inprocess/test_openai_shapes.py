"""OpenAI's shapes on the OpenAI-compatible routes, in-process (see conftest.py): every
answer and error checked against OpenAI's published schemas (tests/api/openai_schema),
and read by the official SDK in strict mode. The same through a real worker is
tests/api/test_openai_compat.py."""

from __future__ import annotations

import json

import openai
import pytest

from api.services.openai_shapes import chat_chunk, chat_completion, embedding_response
from tests.api.openai_schema import validate

ENV = {"id": "job_1", "model": "debug/echo", "status": "succeeded",
       "created_at": "2026-01-01T00:00:00Z", "metrics": {"prompt_tokens": 2},
       "output": {"text": "hi", "finish_reason": "stop",
                  "usage": {"prompt_tokens": 2, "completion_tokens": 1}}}


def strict_sdk(inproc) -> openai.OpenAI:
    key = inproc.client.headers["Authorization"].removeprefix("Bearer ")
    return openai.OpenAI(base_url=f"{inproc.client.base_url}/v1", api_key=key,
                         http_client=inproc.client, max_retries=0,
                         _strict_response_validation=True)


def test_completion_chunk_and_embedding_shapes():
    validate("CreateChatCompletionResponse", chat_completion(ENV))
    validate("CreateChatCompletionStreamResponse",
             chat_chunk("job_1", "debug/echo", 1, {"role": "assistant", "content": ""}))
    validate("CreateChatCompletionStreamResponse",
             chat_chunk("job_1", "debug/echo", 1, {}, "stop", with_usage=True))
    validate("CreateEmbeddingResponse", embedding_response(
        {**ENV, "output": {"embeddings": [[0.5, 0.25]], "dim": 2}}))


def test_models_list_and_retrieve(inproc):
    page = inproc.client.get("/v1/models").json()
    validate("ListModelsResponse", page)
    assert all(isinstance(m["created"], int) and m["owned_by"] for m in page["data"])
    one = inproc.client.get("/v1/models/debug/echo")
    assert one.status_code == 200, one.text
    validate("Model", one.json())
    assert one.json() == next(m for m in page["data"] if m["id"] == "debug/echo")
    client = strict_sdk(inproc)
    assert "debug/echo" in [m.id for m in client.models.list()]
    assert client.models.retrieve("debug/echo").owned_by == "debug"
    assert client.models.retrieve("local/all-MiniLM-L6-v2").id == "local/all-MiniLM-L6-v2"
    # OPENAI_API_KEY is unset here: its models are not found, as an unknown one.
    for missing in ("nope/x", "openai/gpt-4o", "gpt-4o", "local/nope"):
        resp = inproc.client.get(f"/v1/models/{missing}")
        assert resp.status_code == 404, (missing, resp.text)
        validate("ErrorResponse", resp.json())
        assert resp.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope/x")
    assert err.value.code == "model_not_found" and err.value.param == "model"


def test_files_and_batches_in_strict_mode(inproc):
    client = strict_sdk(inproc)
    empty = inproc.client.get("/v1/files").json()
    assert empty == {"object": "list", "data": [], "has_more": False}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "debug/echo", "messages": [{"role": "user", "content": "x"}]}}
    f = client.files.create(file=("b.jsonl", json.dumps(line).encode() + b"\n"),
                            purpose="batch")
    raw = inproc.client.get(f"/v1/files/{f.id}").json()
    validate("OpenAIFile", raw)
    assert None not in raw.values()
    validate("ListFilesResponse", inproc.client.get("/v1/files").json())
    assert [x.id for x in client.files.list()] == [f.id]
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    raw = inproc.client.get(f"/v1/batches/{batch.id}").json()
    validate("Batch", raw)
    assert None not in raw.values()
    validate("ListBatchesResponse", inproc.client.get("/v1/batches").json())
    assert client.batches.retrieve(batch.id).status == batch.status
    assert [b.id for b in client.batches.list()] == [batch.id]
    spare = client.files.create(file=("s.jsonl", b"{}\n"), purpose="batch")
    gone = inproc.client.delete(f"/v1/files/{spare.id}")
    validate("DeleteFileResponse", gone.json())


CHAT = {"model": "debug/echo", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize("path, body, status, param, code", [
    ("/v1/chat/completions", {**CHAT, "model": "nope/x"}, 404, "model", "model_not_found"),
    ("/v1/chat/completions", {**CHAT, "model": "anthropic/claude"}, 404, "model",
     "model_not_found"),
    ("/v1/chat/completions", {**CHAT, "n": 3}, 400, "n", "unsupported_parameter"),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json_object"}}, 400,
     "response_format", "unsupported_parameter"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages[0].role", None),
    ("/v1/chat/completions", {**CHAT, "model": "local/all-MiniLM-L6-v2"}, 400, "model", None),
    ("/v1/chat/completions", b"{not json", 400, None, None),
    ("/v1/embeddings", {"model": "local/all-MiniLM-L6-v2", "input": "x", "dimensions": 8}, 400,
     "dimensions", "unsupported_parameter"),
    ("/v1/embeddings", {"model": "local/nope", "input": "x"}, 404, "model", "model_not_found"),
    ("/v1/batches", {"input_file_id": "file_x", "endpoint": "/v1/chat/completions",
                     "completion_window": "1h"}, 400, "completion_window", None),
    ("/v1/batches", {"input_file_id": "file_nope", "endpoint": "/v1/chat/completions",
                     "completion_window": "24h"}, 404, None, None),
])
def test_errors_answer_as_openai(inproc, path, body, status, param, code):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    resp = inproc.client.post(path, **kw)
    assert resp.status_code == status, resp.text
    validate("ErrorResponse", resp.json())
    err = resp.json()["error"]
    assert (err["param"], err["code"]) == (param, code), err
    assert inproc.client.get("/v1/jobs").json()["data"] == []


def test_file_upload_errors_and_the_native_api(inproc):
    no_purpose = inproc.client.post("/v1/files", files={"file": ("b.jsonl", b"{}\n")})
    assert no_purpose.status_code == 400, no_purpose.text
    validate("ErrorResponse", no_purpose.json())
    assert no_purpose.json()["error"]["param"] == "purpose"
    # The native API keeps its 422, with param and code too.
    native = inproc.client.post("/v1/jobs", json={"model": "nope/x", "input": {"prompt": "x"}})
    assert native.status_code == 422
    assert native.json()["error"] | {"message": ""} == {
        "type": "invalid_request", "message": "", "param": "model", "code": "model_not_found"}
    unauthorized = inproc.client.get("/v1/models", headers={"Authorization": "Bearer no"})
    assert unauthorized.status_code == 401
    validate("ErrorResponse", unauthorized.json())
