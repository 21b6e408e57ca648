"""What the API answers, as the OpenAPI document declares it.

Routes that return dicts name these models as `response_model`. The models forbid
unknown keys, so a field added to a response but not here fails loudly in the tests
(the fuzzer walks every route) instead of being dropped or left undocumented.
Every error is `{"error": {"type", "message", "param", "code"}}` (api/errors.py);
`errors(...)` documents the statuses a route can answer with.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Errors -----------------------------------------------------------------------------

class ErrorDetail(_Shape):
    type: str
    message: str
    # OpenAI's: the request field at fault, and a finer reason than `type`; null if none.
    param: str | None
    code: str | None


class ErrorBody(_Shape):
    error: ErrorDetail


_WHY = {
    400: "The request is malformed or names an unsupported parameter (the OpenAI-compatible "
         "routes; the native API answers 422), or its model refused the job.",
    401: "Missing, unknown or revoked API key.",
    404: "No such object, or it belongs to another key; on the OpenAI-compatible routes, "
         "also an unknown model (code `model_not_found`).",
    409: "Conflicts with the object's state (or an Idempotency-Key reused with another body).",
    413: "The body, prompt or file is over its limit.",
    422: "The request is malformed: what is wrong is in the message.",
    429: "Too many requests, queued jobs or open streams for this key.",
    500: "The job's worker was lost too many times.",
    502: "The model's provider refused our credentials.",
    503: "The database or the model's provider is unavailable; retry shortly.",
    504: "The job ran past its time limit.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer"}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses; 429 and 503 carry Retry-After."""
    return {code: {"model": ErrorBody, "description": _WHY[code],
                   **({"headers": RETRY_AFTER} if code in (429, 503) else {})}
            for code in codes}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as the JSON body of a route that parses its body
    itself; the schema is inlined, as its `$defs` would not resolve inside the document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": inline(schema)}}}}


# One server-sent event, as OpenAPI before 3.2 has a text/event-stream schema describe
# each event (3.2 names it itemSchema): `data` is JSON text, or "[DONE]" last in a chat
# completion stream.
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"event": {"type": "string"}, "data": {"type": "string"},
                            "id": {"type": "string"}, "retry": {"type": "integer"}}}


# Every route behind a key can answer these: no key, a malformed request, the key's
# rate limit, the database down.
AUTHED = errors(401, 422, 429, 503)


# Models, queues, health ------------------------------------------------------------------

class ModelEntry(_Shape):
    id: str
    object: Literal["model"]
    # OpenAI's Model: a Unix time; 0, as a catalog entry has none.
    created: int
    owned_by: str
    kinds: list[Literal["generate", "embed"]]
    queue: str
    configured: bool
    description: str
    # The request parameters the model reads (params of a generate job).
    params: list[str]
    hint: str | None = None
    loaded_on: list[str]


class ModelList(_Shape):
    object: Literal["list"]
    data: list[ModelEntry]


class QueueDepth(_Shape):
    depth: int
    oldest_age_s: float | None


class QueueStats(_Shape):
    queue: str
    running: int
    priorities: dict[Literal["interactive", "batch"], QueueDepth]
    workers: int


class QueueList(_Shape):
    object: Literal["list"]
    data: list[QueueStats]


class QueuePosition(_Shape):
    object: Literal["queue_position"]
    job_id: str
    status: str
    queue: str
    priority: Literal["interactive", "batch"]
    # Queued jobs ahead of it on its queue; null once the job left the queue.
    ahead: int | None


class Alive(_Shape):
    status: Literal["alive"]


class Readiness(_Shape):
    status: Literal["ready", "not_ready"]
    database: str
    redis: str
    time: float


# Files and batches (the OpenAI shapes) ---------------------------------------------------

class FileObject(_Shape):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"]
    # Left out when unset: OpenAI's schema types them as a string and an integer.
    status_details: str | None = None
    expires_at: int | None = None


class FileList(_Shape):
    object: Literal["list"]
    data: list[FileObject]
    has_more: bool
    # Left out on an empty page.
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(_Shape):
    id: str
    object: Literal["file"]
    deleted: bool


class BatchError(_Shape):
    code: str
    message: str
    param: str | None
    line: int | None


class BatchErrors(_Shape):
    object: Literal["list"]
    data: list[BatchError]


class RequestCounts(_Shape):
    total: int
    completed: int
    failed: int


class BatchObject(_Shape):
    id: str
    object: Literal["batch"]
    endpoint: str
    # Unset fields are left out (OpenAI's schema types them, never null).
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Literal["validating", "failed", "in_progress", "finalizing", "completed",
                    "expired", "cancelling", "cancelled"]
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(_Shape):
    object: Literal["list"]
    data: list[BatchObject]
    has_more: bool
    # Left out on an empty page.
    first_id: str | None = None
    last_id: str | None = None


# Chat completions and embeddings (the OpenAI shapes) ----------------------------------

class ChatMessageOut(_Shape):
    role: Literal["assistant"]
    content: str
    refusal: None


class ChatChoice(_Shape):
    index: int
    logprobs: None
    message: ChatMessageOut
    finish_reason: str


class ChatUsage(_Shape):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Shape):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class Embedding(_Shape):
    object: Literal["embedding"]
    index: int
    # A list of floats, or base64 of little-endian float32 with encoding_format=base64.
    embedding: list[float] | str


class EmbeddingUsage(_Shape):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Shape):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage
