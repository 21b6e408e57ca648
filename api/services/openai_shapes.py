"""The OpenAI wire shapes: requests turned into job requests, jobs turned into responses.

Pure functions, shared by the interactive routes and by batch lines, so a batch line
is validated exactly as the same request sent alone would be.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from common.errors import InvalidRequest, UnsupportedParameter
from common.schemas import JobCreate

# What a batch may name; /v1/responses lines are parsed by responses_shapes (batch_lines).
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")

# Parameters of the OpenAI API that we accept but that change nothing here, as long as
# they keep the value that asks for no feature (None allowed too).
_NEUTRAL: dict[str, set[Any] | None] = {
    "n": {1}, "logprobs": {False}, "frequency_penalty": {0}, "presence_penalty": {0},
    "parallel_tool_calls": {True, False}, "store": {False, True}, "user": None,
    "service_tier": None, "metadata": None, "logit_bias": None, "tool_choice": {"none"},
    "reasoning_effort": None, "prediction": None, "modalities": {("text",)},
}


def document_neutral(neutral: dict[str, set[Any] | None]) -> Callable[[dict, type], None]:
    """A `json_schema_extra` that lists the neutral parameters with the values accepted,
    and no other unknown keys (refuse_unsupported() refuses them)."""

    def document(schema: dict, _cls: type) -> None:
        for key, allowed in neutral.items():
            # In a fixed order: the sets' order changes with each process's hash seed,
            # and the document must be the same from every process.
            values = None if allowed is None else [list(v) if isinstance(v, tuple) else v
                                                   for v in sorted(allowed, key=repr)]
            schema["properties"].setdefault(key, {} if values is None
                                            else {"enum": [*values, None]})
        schema["additionalProperties"] = False

    return document


def refuse_unsupported(extra: dict[str, Any] | None,
                       neutral: dict[str, set[Any] | None]) -> None:
    """InvalidRequest naming the first unknown key, or a neutral one with a value that
    asks for a feature."""
    for key, value in (extra or {}).items():
        if key not in neutral:
            raise UnsupportedParameter(f"parameter {key!r} is not supported by this server",
                                       param=key)
        allowed = neutral[key]
        if value is not None and allowed is not None and not _one_of(value, allowed):
            raise UnsupportedParameter(f"parameter {key!r} = {value!r} is not supported here",
                                       param=key)


# JobCreate checks the model's name (common/schemas.py); the document says so here too.
MODEL_NAME_DOC: dict[str, Any] = {"minLength": 3, "maxLength": 200}


class _Body(BaseModel):
    # Unknown keys are kept so that we can name them in the refusal.
    model_config = ConfigDict(extra="allow", json_schema_extra=document_neutral(_NEUTRAL))

    def unsupported(self) -> None:
        refuse_unsupported(self.model_extra, _NEUTRAL)


def _one_of(value, allowed: set) -> bool:
    """`value in allowed` as JSON sees it: no hashing (an object is simply not allowed),
    a bool is not a number (n=true is not n=1), a list matches the tuple of its items."""
    if isinstance(value, list):
        value = tuple(value)
    return any(isinstance(a, bool) == isinstance(value, bool) and value == a for a in allowed)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    # Parts are parsed as dicts so that _text can name what is refused; the document
    # offers what is accepted.
    content: Annotated[str | list[dict] | None, WithJsonSchema({"anyOf": [
        {"type": "string"}, {"type": "null"},
        {"type": "array", "items": {"type": "object", "required": ["type", "text"],
                                    "properties": {"type": {"const": "text"},
                                                   "text": {"type": "string"}}}}]})]

    @field_validator("content")
    @classmethod
    def _text(cls, v):
        # Content parts: only text is understood; images and audio are refused.
        if isinstance(v, list):
            texts = []
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported")
                texts.append(part["text"])
            return "".join(texts)
        return v or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(_Body):
    model: str = Field(json_schema_extra=MODEL_NAME_DOC)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict | None = None
    # Monkey Coder's own: debug/echo waits this long before each word.
    delay_ms: float | None = None

    def job(self, priority: str = "interactive") -> JobCreate:
        self.unsupported()
        if self.response_format not in (None, {"type": "text"}):
            raise UnsupportedParameter(
                "response_format other than {'type': 'text'} is not supported",
                param="response_format")
        params = {k: v for k, v in {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "stop": self.stop,
            "seed": self.seed, "delay_ms": self.delay_ms,
        }.items() if v is not None}
        messages = [{"role": m.role, "content": m.content} for m in self.messages]
        return JobCreate(kind="generate", model=self.model, input={"messages": messages},
                         params=params, priority=priority)


class EmbeddingRequest(_Body):
    model: str = Field(json_schema_extra=MODEL_NAME_DOC)
    # Token ids and `dimensions` are parsed so that job() can refuse them by name; the
    # document offers what is accepted: text, and no dimensions.
    input: Annotated[str | list[str] | list[int] | list[list[int]], WithJsonSchema(
        {"anyOf": [{"type": "string"},
                   {"type": "array", "items": {"type": "string"}, "minItems": 1}]})]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int | None, WithJsonSchema({"type": "null"})] = None

    def job(self, priority: str = "interactive") -> JobCreate:
        self.unsupported()
        if self.dimensions is not None:
            raise UnsupportedParameter("dimensions is not supported: the model's own size is used",
                                       param="dimensions")
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest("input must be a string or a non-empty list of strings "
                                 "(token ids are not supported)")
        meta = {"encoding_format": "base64"} if self.encoding_format == "base64" else {}
        return JobCreate(kind="embed", model=self.model, input={"texts": texts},
                         priority=priority, metadata=meta)


REQUESTS: dict[str, type[ChatRequest] | type[EmbeddingRequest]] = {
    "/v1/chat/completions": ChatRequest, "/v1/embeddings": EmbeddingRequest,
}


def parse_request(endpoint: str, body: object, *, priority: str = "interactive"
                  ) -> tuple[ChatRequest | EmbeddingRequest, JobCreate]:
    """The request model and its job for `endpoint`; InvalidRequest says what is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        req = REQUESTS[endpoint].model_validate(body)
        return req, req.job(priority)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc), param=param_of(exc)) from None


def param_of(exc: ValidationError) -> str | None:
    """The first field at fault, as OpenAI names it (`messages[0].content`)."""
    for e in exc.errors()[:1]:
        param = ""
        for part in e.get("loc", ()):
            param += f"[{part}]" if isinstance(part, int) else f".{part}" if param else str(part)
        return param or None
    return None


def describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)


# Responses -------------------------------------------------------------------------

def unix(iso: str | None) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()) if iso else 0


def ts(dt: datetime | None) -> int | None:
    """OpenAI's timestamps: Unix seconds."""
    return int(dt.timestamp()) if dt is not None else None


def usage_of(env: dict) -> dict:
    out = env.get("output") or {}
    u = out.get("usage") or {}
    prompt = u.get("prompt_tokens", (env.get("metrics") or {}).get("prompt_tokens", 0)) or 0
    completion = u.get("completion_tokens", 0) or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def chat_completion(env: dict) -> dict:
    out = env.get("output") or {}
    return {
        "id": completion_id(env["id"]), "object": "chat.completion",
        "created": unix(env.get("created_at")), "model": env["model"],
        "choices": [{
            "index": 0, "logprobs": None,
            "message": {"role": "assistant", "content": out.get("text", ""), "refusal": None},
            "finish_reason": out.get("finish_reason") or "stop",
        }],
        "usage": usage_of(env),
    }


def chat_chunk(job_id: str, model: str, created: int, delta: dict,
               finish_reason: str | None = None, *, with_usage: bool = False) -> dict:
    chunk = {
        "id": completion_id(job_id), "object": "chat.completion.chunk", "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(job_id: str, model: str, created: int, env: dict) -> dict:
    return {"id": completion_id(job_id), "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": usage_of(env)}


def embedding_vector(vec: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # What the OpenAI SDK decodes: little-endian float32, base64.
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
    return vec


def embedding_response(env: dict) -> dict:
    fmt = (env.get("metadata") or {}).get("encoding_format", "float")
    vectors = (env.get("output") or {}).get("embeddings") or []
    prompt = (env.get("metrics") or {}).get("prompt_tokens") or 0
    return {
        "object": "list", "model": env["model"],
        "data": [{"object": "embedding", "index": i, "embedding": embedding_vector(v, fmt)}
                 for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def response_body(endpoint: str, env: dict) -> dict:
    return chat_completion(env) if endpoint == "/v1/chat/completions" else embedding_response(env)


# How a job that did not succeed answers an OpenAI request.
_ERROR_STATUS = {
    "invalid_request": 400, "provider_auth": 502, "provider_rate_limited": 429,
    "provider_unavailable": 503, "model_unavailable": 503, "out_of_memory": 503,
    "timeout": 504, "expired": 503, "cancelled": 499, "worker_lost": 500,
}


def job_failure(env: dict) -> tuple[int, dict]:
    """(HTTP status, {type, message}) for a job that ended without success."""
    err = env.get("error") or {}
    if env.get("status") == "cancelled":
        err = {"type": "cancelled", "message": f"job {env['id']} was cancelled"}
    type_ = err.get("type") or "internal_error"
    message = err.get("message") or f"job {env['id']} ended as {env.get('status')}"
    return _ERROR_STATUS.get(type_, 500), {"type": type_, "message": message}
