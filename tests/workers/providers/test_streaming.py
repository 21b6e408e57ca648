"""A streamed job per provider: tokens as they come, usage, finish, request shape."""

from __future__ import annotations

import pytest

from tests.fakes.providers import count_words, expected_text, ok, token_text
from tests.workers.providers.conftest import FAKE_KEY, WatchedContext, make_job

pytestmark = pytest.mark.timeout(30)

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Count to three"},
]
PARAMS = {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "seed": 42}


def test_streams_every_delta_with_usage(provider, fake, make_runtime):
    fake.script(ok(tokens=6))
    ctx = WatchedContext()
    result = make_runtime().generate(make_job(provider, prompt="tell me a story"), ctx)

    assert ctx.tokens == [token_text(i) for i in range(6)]
    assert result.text == expected_text(6)
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 6
    assert result.prompt_tokens == count_words("tell me a story")
    assert ctx.retries == [] and ctx.restarts == []
    (request,) = fake.requests
    assert request.key == FAKE_KEY


def test_runs_out_of_tokens_as_length(provider, fake, make_runtime):
    fake.script(ok(tokens=3, finish="length"))
    result = make_runtime().generate(make_job(provider, max_tokens=3), WatchedContext())
    assert (result.text, result.finish_reason) == (expected_text(3), "length")


@pytest.mark.parametrize("provider", ["openai", "groq", "google", "xai"])
def test_counts_deltas_when_the_provider_sends_no_usage(provider, fake, make_runtime):
    # Anthropic always sends usage (it is part of message_start), so it is not here.
    fake.script(ok(tokens=4, usage=False))
    result = make_runtime().generate(make_job(provider), WatchedContext())
    assert result.text == expected_text(4)
    assert result.completion_tokens == 4


def _body_checks(provider: str, request) -> None:
    body = request.body
    if provider == "google":
        assert request.path == "/v1beta/models/fake-model:streamGenerateContent"
        assert request.query == {"alt": "sse"}
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert [c["parts"][0]["text"] for c in body["contents"]] == [
            "Hi there", "Hello!", "Count to three"]
        assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
        assert body["generationConfig"] == {
            "maxOutputTokens": 7, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"],
            "seed": 42}
        return
    assert body["model"] == "fake-model"
    assert body["stream"] is True
    assert (body["temperature"], body["top_p"]) == (0.5, 0.9)
    if provider == "anthropic":
        assert request.path == "/v1/messages"
        assert body["system"] == "You are terse."
        assert body["messages"] == CHAT[1:]
        assert body["max_tokens"] == 7
        assert body["stop_sequences"] == ["END"]
        assert "seed" not in body
        return
    assert body["messages"] == CHAT
    assert body["stop"] == ["END"]
    assert body["seed"] == 42
    if provider == "openai":
        assert request.path == "/v1/chat/completions"
        assert body["max_completion_tokens"] == 7
        assert body["stream_options"] == {"include_usage": True}
    elif provider == "xai":
        assert request.path == "/v1/chat/completions"
        assert body["max_tokens"] == 7
    else:
        assert request.path == "/openai/v1/chat/completions"
        assert body["max_tokens"] == 7


def test_maps_messages_and_params_to_the_provider_shape(provider, fake, make_runtime):
    fake.script(ok(tokens=2))
    make_runtime().generate(make_job(provider, messages=CHAT, **PARAMS), WatchedContext())
    _body_checks(provider, fake.requests[0])


@pytest.mark.parametrize("provider", ["anthropic"])
def test_anthropic_gets_a_default_max_tokens(provider, fake, make_runtime):
    make_runtime().generate(make_job(provider), WatchedContext())
    assert fake.requests[0].body["max_tokens"] == 1024


def test_one_runtime_reuses_its_client_and_connections(provider, fake, make_runtime):
    runtime = make_runtime()
    for _ in range(3):
        runtime.generate(make_job(provider), WatchedContext())
    assert runtime.client() is runtime.client()
    if provider in ("openai", "xai"):
        # openai 3.x stops reading at `data: [DONE]` and closes the response before the
        # body's last chunk is parsed, so httpcore cannot reuse that connection.
        assert fake.connections_opened == 3
    else:
        assert fake.connections_opened == 1


@pytest.mark.parametrize("provider", ["openai"])
def test_openai_embeddings(provider, fake, make_runtime):
    from workers.runtimes.base import JobSpec

    job = JobSpec(id="e1", kind="embed", model="openai/text-embedding-3-small",
                  input={"texts": ["one two", "three"]}, params={}, attempt=1)
    result = make_runtime().embed(job, WatchedContext())
    assert result.embeddings == [[7.0, 0.0, 0.25, -1.0], [5.0, 1.0, 0.25, -1.0]]
    assert (result.dim, result.prompt_tokens) == (4, 3)
    assert fake.requests[0].body["model"] == "text-embedding-3-small"
