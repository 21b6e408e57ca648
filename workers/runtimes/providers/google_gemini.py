"""Google's Gemini API through google-genai (`streamGenerateContent?alt=sse`)."""

from __future__ import annotations

from typing import Any

from google import genai
from google.genai import errors, types

from workers.runtimes.base import JobSpec
from workers.runtimes.providers._base import ProviderRuntime, StreamOutput
from workers.runtimes.providers._failures import Failure, from_status
from workers.runtimes.providers._inputs import GenerationParams, messages_of, split_system

_ROLE = {"user": "user", "assistant": "model"}


def _read_chunk(chunk: Any, out: StreamOutput) -> None:
    usage = chunk.usage_metadata
    if usage is not None and usage.candidates_token_count is not None:
        # Thinking tokens are billed as output, as OpenAI counts reasoning tokens.
        completion = usage.candidates_token_count + (usage.thoughts_token_count or 0)
        out.usage(usage.prompt_token_count, completion)
    for candidate in (chunk.candidates or [])[:1]:
        if candidate.content is not None:
            for part in candidate.content.parts or ():
                if part.text and not part.thought:
                    out.text(part.text)
        if candidate.finish_reason is not None:
            out.finish(candidate.finish_reason)


class GoogleRuntime(ProviderRuntime):
    provider = "google"
    default_base_url = "https://generativelanguage.googleapis.com/"

    def build_client(self, api_key: str, http_client: Any) -> Any:
        options = types.HttpOptions(
            base_url=self.base_url,
            # Pinned: the SDK's default moved between releases (v1beta, then v1), and
            # v1beta is where every Gemini feature (system instruction, seed) lives.
            api_version="v1beta",
            timeout=int(self.settings.provider_timeout_s * 1000),
            httpx_client=http_client,
        )
        # Explicit arguments, so that GOOGLE_GENAI_USE_VERTEXAI and friends in the
        # environment cannot reroute the jobs.
        return genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def build_request(self, job: JobSpec) -> dict:
        params = GenerationParams.from_job(job)
        system, conversation = split_system(messages_of(job))
        contents = [
            types.Content(role=_ROLE[m.role], parts=[types.Part(text=m.content)])
            for m in conversation
        ]
        config = types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop_sequences=list(params.stop) or None,
            seed=params.seed,
        )
        return {"model": job.model_name, "contents": contents, "config": config}

    def stream(self, client: Any, request: dict, out: StreamOutput) -> None:
        chunks = client.models.generate_content_stream(**request)
        try:
            for chunk in chunks:
                _read_chunk(chunk, out)
                if out.stopping:
                    return
        finally:
            chunks.close()

    def failure(self, exc: BaseException) -> Failure | None:
        if not isinstance(exc, errors.APIError):
            return None
        status = exc.code or 500
        message = exc.message or ""
        # Gemini answers a wrong key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
        if status == 400 and ("API_KEY_INVALID" in repr(exc.details)
                              or "API key not valid" in message):
            status = 401
        headers = getattr(exc.response, "headers", None)
        return from_status(status, headers=headers, message=message, secret=self._key)


__all__ = ["GoogleRuntime"]
