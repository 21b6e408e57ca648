"""Anthropic's Messages API, streamed as message events."""

from __future__ import annotations

from typing import Any

import anthropic

from workers.runtimes.base import JobSpec
from workers.runtimes.providers._base import ProviderRuntime, StreamOutput
from workers.runtimes.providers._failures import Failure, from_stainless
from workers.runtimes.providers._inputs import GenerationParams, messages_of, split_system

#: Anthropic requires `max_tokens`; this is used when the job sets none.
DEFAULT_MAX_TOKENS = 1024

# An error event inside a stream that began with 200 carries only its type.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _status_of_body(body: Any) -> int | None:
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return _STATUS_OF_ERROR_TYPE.get(kind) if isinstance(kind, str) else None


def _read_event(event: Any, out: StreamOutput) -> None:
    kind = event.type
    if kind == "message_start":
        usage = event.message.usage
        prompt = (usage.input_tokens or 0) + (
            getattr(usage, "cache_creation_input_tokens", None) or 0
        ) + (getattr(usage, "cache_read_input_tokens", None) or 0)
        out.usage(prompt, usage.output_tokens)
    elif kind == "content_block_delta":
        if event.delta.type == "text_delta":
            out.text(event.delta.text)
    elif kind == "message_delta":
        if event.usage is not None:
            out.usage(completion=event.usage.output_tokens)
        if event.delta.stop_reason:
            out.finish(event.delta.stop_reason)


class AnthropicRuntime(ProviderRuntime):
    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def build_client(self, api_key: str, http_client: Any) -> Any:
        return anthropic.Anthropic(
            api_key=api_key, base_url=self.base_url, max_retries=0,
            timeout=http_client.timeout, http_client=http_client,
        )

    def build_request(self, job: JobSpec) -> dict:
        params = GenerationParams.from_job(job)
        system, conversation = split_system(messages_of(job))
        request: dict[str, Any] = {
            "model": job.model_name,
            "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": m.role, "content": m.content} for m in conversation],
            "stream": True,
        }
        if system is not None:
            request["system"] = system
        # The SDK (2.x) no longer lists temperature and top_p among its arguments; the
        # job's values are still sent as given, and the provider judges them.
        sampling = {"temperature": params.temperature, "top_p": params.top_p}
        sampling = {k: v for k, v in sampling.items() if v is not None}
        if sampling:
            request["extra_body"] = sampling
        if params.stop:
            request["stop_sequences"] = list(params.stop)
        # Anthropic has no seed; it is left out rather than refused.
        return request

    def stream(self, client: Any, request: dict, out: StreamOutput) -> None:
        with client.messages.create(**request) as events:
            for event in events:
                _read_event(event, out)
                if out.stopping:
                    return

    def failure(self, exc: BaseException) -> Failure | None:
        return from_stainless(anthropic, exc, secret=self._key, status_of_body=_status_of_body)


__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicRuntime"]
