"""Groq: OpenAI-shaped chat completion chunks through its own SDK (on httpx, not httpx2).

Groq reports usage in the final chunk's `x_groq.usage` (newer responses may also
carry a top-level `usage`); both are read.
"""

from __future__ import annotations

from typing import Any

import groq

from workers.runtimes.base import JobSpec
from workers.runtimes.providers._base import ProviderRuntime, StreamOutput
from workers.runtimes.providers._failures import Failure, from_stainless
from workers.runtimes.providers.openai_chat import chat_request, read_chat_chunk


class GroqRuntime(ProviderRuntime):
    provider = "groq"
    default_base_url = "https://api.groq.com"
    http_flavor = "httpx"

    def build_client(self, api_key: str, http_client: Any) -> Any:
        return groq.Groq(
            api_key=api_key, base_url=self.base_url, max_retries=0,
            timeout=http_client.timeout, http_client=http_client,
        )

    def build_request(self, job: JobSpec) -> dict:
        # The SDK has no `stream_options`; usage comes in `x_groq` regardless.
        return chat_request(job, max_tokens_param="max_tokens", include_usage=False)

    def stream(self, client: Any, request: dict, out: StreamOutput) -> None:
        with client.chat.completions.create(**request) as chunks:
            for chunk in chunks:
                read_chat_chunk(chunk, out)
                x_groq = getattr(chunk, "x_groq", None)
                usage = getattr(x_groq, "usage", None)
                if usage is not None:
                    out.usage(usage.prompt_tokens, usage.completion_tokens)
                if out.stopping:
                    return

    def failure(self, exc: BaseException) -> Failure | None:
        return from_stainless(groq, exc, secret=self._key)


__all__ = ["GroqRuntime"]
