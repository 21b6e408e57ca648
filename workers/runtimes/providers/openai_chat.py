"""OpenAI chat completions, and xAI through the same SDK and wire protocol."""

from __future__ import annotations

from typing import Any

import openai

from common.errors import JobInvalid
from workers.runtimes.base import EmbedResult, JobSpec, RunContext
from workers.runtimes.providers._base import ProviderRuntime, StreamOutput
from workers.runtimes.providers._failures import Failure, from_stainless
from workers.runtimes.providers._inputs import GenerationParams, messages_of


def chat_request(job: JobSpec, *, max_tokens_param: str, include_usage: bool) -> dict:
    """The chat completions request shared by OpenAI, xAI and Groq."""
    params = GenerationParams.from_job(job)
    request: dict[str, Any] = {
        "model": job.model_name,
        "messages": [{"role": m.role, "content": m.content} for m in messages_of(job)],
        "stream": True,
    }
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    if params.max_tokens is not None:
        request[max_tokens_param] = params.max_tokens
    if params.temperature is not None:
        request["temperature"] = params.temperature
    if params.top_p is not None:
        request["top_p"] = params.top_p
    if params.stop:
        request["stop"] = list(params.stop)
    if params.seed is not None:
        request["seed"] = params.seed
    return request


def read_chat_chunk(chunk: Any, out: StreamOutput) -> None:
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        out.usage(usage.prompt_tokens, usage.completion_tokens)
    for choice in chunk.choices or ():
        if choice.index != 0:
            continue
        if choice.delta is not None:
            out.text(choice.delta.content)
        if choice.finish_reason:
            out.finish(choice.finish_reason)


class OpenAIRuntime(ProviderRuntime):
    provider = "openai"
    default_base_url = "https://api.openai.com/v1"
    # OpenAI's reasoning models refuse `max_tokens`; `max_completion_tokens` works for all.
    max_tokens_param = "max_completion_tokens"

    def build_client(self, api_key: str, http_client: Any) -> Any:
        return openai.OpenAI(
            api_key=api_key, base_url=self.base_url, max_retries=0,
            timeout=http_client.timeout, http_client=http_client,
        )

    def build_request(self, job: JobSpec) -> dict:
        return chat_request(job, max_tokens_param=self.max_tokens_param, include_usage=True)

    def stream(self, client: Any, request: dict, out: StreamOutput) -> None:
        with client.chat.completions.create(**request) as chunks:
            for chunk in chunks:
                read_chat_chunk(chunk, out)
                if out.stopping:
                    return

    def failure(self, exc: BaseException) -> Failure | None:
        return from_stainless(openai, exc, secret=self._key)

    def embed(self, job: JobSpec, ctx: RunContext) -> EmbedResult:
        texts = job.input.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise JobInvalid("input.texts must be a non-empty list of strings")
        client = self.client()

        def attempt() -> EmbedResult:
            response = client.embeddings.create(model=job.model_name, input=texts)
            data = sorted(response.data, key=lambda d: d.index)
            usage = response.usage.prompt_tokens if response.usage else 0
            return EmbedResult(embeddings=[list(d.embedding) for d in data], prompt_tokens=usage)

        return self.with_retries(
            ctx, attempt, on_retry=lambda failure: None, stopped=lambda: self.stopped_call(ctx)
        )


class XAIRuntime(OpenAIRuntime):
    """xAI speaks OpenAI's chat completions; its docs name `max_tokens`."""

    provider = "xai"
    default_base_url = "https://api.x.ai/v1"
    max_tokens_param = "max_tokens"

    def embed(self, job: JobSpec, ctx: RunContext) -> EmbedResult:
        raise JobInvalid(f"model {job.model} does not embed text")


__all__ = ["OpenAIRuntime", "XAIRuntime", "chat_request", "read_chat_chunk"]
