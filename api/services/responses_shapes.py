"""The Responses API's wire shapes: a request turned into a job, a job turned into a
response object, and a job's event log turned into the typed event stream.

Pure functions and one small state machine, so that the interactive route, the resume
of a dropped stream and a batch line all see the same thing. The event stream is
derived from the job's event log alone (its entries, in order, and the final
envelope), never from anything held in an API process: replaying the same log gives
the same events with the same `sequence_number`s, which is what lets
`GET /v1/responses/{id}?stream=true&starting_after=N` resume on any API replica, after
a restart of the API or of the worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from api.services.openai_shapes import (
    MODEL_NAME_DOC,
    describe,
    document_neutral,
    refuse_unsupported,
    unix,
)
from common.errors import InvalidRequest
from common.responses_db import RESPONSE_PREFIX, response_id
from common.schemas import MAX_EXPIRES_AFTER_S, METADATA_DOC, JobCreate, check_metadata

# Parameters accepted with the value that asks for no feature (None allowed too).
_NEUTRAL: dict[str, set[Any] | None] = {
    "parallel_tool_calls": {True, False}, "tools": {()}, "tool_choice": {"none", "auto"},
    "truncation": {"disabled", "auto"}, "user": None, "service_tier": None,
    "reasoning": None, "include": {()}, "prompt_cache_key": None, "safety_identifier": None,
    "top_logprobs": {0}, "stream_options": None,
}

_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"enum": ["input_text", "output_text"]},
                             "text": {"type": "string"}}}
_INPUT_DOC = {"anyOf": [
    {"type": "string"},
    {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["role", "content"],
        "properties": {"type": {"const": "message"},
                       "role": {"enum": ["user", "assistant", "system", "developer"]},
                       "content": {"anyOf": [{"type": "string"},
                                             {"type": "array", "items": _TEXT_PART}]}}}}]}


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"


class TextParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: Literal["medium"] | None = None


class ResponseRequest(BaseModel):
    """POST /v1/responses (and a batch line's body): text in, text out."""

    model_config = ConfigDict(extra="allow", json_schema_extra=document_neutral(_NEUTRAL))

    model: str = Field(json_schema_extra=MODEL_NAME_DOC)
    input: Annotated[str | list[dict[str, Any]], WithJsonSchema(_INPUT_DOC)]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    metadata: Annotated[dict[str, str] | None, Field(json_schema_extra=METADATA_DOC)] = None
    store: bool | None = True
    stream: bool | None = False
    background: bool | None = False
    previous_response_id: str | None = Field(None, max_length=48)
    text: TextParam | None = None
    # Monkey Coder's own: debug/echo waits this long before each word; a webhook called
    # when the response ends (response.completed, ...), as a native job's.
    delay_ms: float | None = Field(None, ge=0, le=60_000)
    webhook: str | None = Field(None, min_length=8, max_length=2000,
                                pattern=r"^[hH][tT][tT][pP][sS]?://[^\s]+$")
    # Seconds after the response ends that it is deleted (its job's expires_after).
    expires_after: int | None = Field(None, ge=1, le=MAX_EXPIRES_AFTER_S)

    def unsupported(self) -> None:
        refuse_unsupported(self.model_extra, _NEUTRAL)
        if self.background and self.store is False:
            raise InvalidRequest("background responses must be stored: drop store=false")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(v)

    def messages(self) -> list[dict[str, str]]:
        """The input as messages ({role, content}), text only."""
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        if not self.input:
            raise InvalidRequest("input must not be an empty list")
        return [_message(i, item) for i, item in enumerate(self.input)]

    def job(self, history: list[dict[str, str]], priority: str = "interactive") -> JobCreate:
        """The job that answers this request after `history` (earlier turns)."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        params = {k: v for k, v in {
            "max_tokens": self.max_output_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "delay_ms": self.delay_ms}.items() if v is not None}
        try:
            return JobCreate(kind="generate", model=self.model, priority=priority,
                             params=params, input={"messages": system + history + self.messages()},
                             metadata=self.metadata or {}, webhook=self.webhook,
                             expires_after=self.expires_after)
        except ValidationError as exc:
            raise InvalidRequest(describe(exc)) from None


def _message(i: int, item: Any) -> dict[str, str]:
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise InvalidRequest(f"input[{i}]: only message items are supported, not {kind!r}")
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"input[{i}].role: {role!r} is not a message role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(f"input[{i}].content must be a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text") \
                or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"input[{i}].content[{j}]: only text parts are supported")
        texts.append(part["text"])
    return {"role": role, "content": "".join(texts)}


def parse_response_request(body: object) -> ResponseRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        req = ResponseRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
    req.unsupported()
    return req


def batch_job(body: object) -> JobCreate:
    """A /v1/responses batch line's job: the same checks as the route, minus what a
    batch line cannot be (streamed, in the background, part of a conversation; its
    webhook is the batch's)."""
    req = parse_response_request(body)
    for name in ("stream", "background", "previous_response_id", "webhook"):
        if getattr(req, name):
            raise InvalidRequest(f"{name} is not allowed in a batch line")
    return req.job([], "batch")


class BatchLineRow:
    """What a batch line's response object takes from a response row: batch lines are
    not stored as responses, and their instructions are the job's system message."""

    background = False
    store = False
    previous_response_id = None

    def __init__(self, env: dict):
        messages = (env.get("input") or {}).get("messages") or []
        self.instructions = messages[0]["content"] if messages and \
            messages[0]["role"] == "system" else None


def batch_response_body(env: dict) -> dict:
    return response_object(env, BatchLineRow(env))


# The response object ---------------------------------------------------------------

def status_of(env: dict) -> str:
    """A job's status as a response's."""
    status = env["status"]
    if status == "succeeded":
        out = env.get("output") or {}
        return "incomplete" if out.get("finish_reason") == "length" else "completed"
    return {"queued": "queued", "running": "in_progress", "cancelling": "in_progress",
            "failed": "failed", "expired": "failed", "cancelled": "cancelled"}[status]


_ERROR_CODES = {"provider_rate_limited": "rate_limit_exceeded",
                "invalid_request": "invalid_prompt"}


def message_item(job_id: str, text: str, status: str) -> dict:
    return {"id": "msg_" + job_id.removeprefix("job_"), "type": "message", "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def usage(env: dict) -> dict:
    u = (env.get("output") or {}).get("usage") or {}
    prompt = u.get("prompt_tokens", (env.get("metrics") or {}).get("prompt_tokens", 0)) or 0
    completion = u.get("completion_tokens", 0) or 0
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def response_object(env: dict, row: Any, *, status: str | None = None) -> dict:
    """The response as OpenAI shows it, from the job's envelope and the response's row.
    `status` overrides the job's (the snapshots inside stream events); the output shows
    only once the job is over, as the database has it only then."""
    status = status or status_of(env)
    params = env.get("params") or {}
    over = status in ("completed", "incomplete", "failed", "cancelled")
    text = (env.get("output") or {}).get("text") or ""
    output = []
    if over and (text or status in ("completed", "incomplete")):
        output = [message_item(env["id"], text,
                               "completed" if status == "completed" else "incomplete")]
    err = env.get("error") or {}
    return {
        "id": response_id(env["id"]), "object": "response",
        "created_at": unix(env.get("created_at")), "status": status,
        "completed_at": unix(env.get("finished_at")) if status == "completed" else None,
        "background": bool(row.background),
        "error": {"code": _ERROR_CODES.get(str(err.get("type")), "server_error"),
                  "message": f"{err.get('type')}: {err.get('message')}"}
        if status == "failed" else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": row.instructions, "max_output_tokens": params.get("max_tokens"),
        "model": env["model"], "output": output, "parallel_tool_calls": True,
        "previous_response_id": row.previous_response_id,
        "reasoning": None, "service_tier": "default", "store": bool(row.store),
        "temperature": params.get("temperature", 1.0), "top_p": params.get("top_p", 1.0),
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "truncation": "disabled", "metadata": env.get("metadata") or {},
        # OpenAI omits usage (it is not nullable) until the response is over.
        **({"usage": usage(env)} if over else {}),
    }


def input_item(job_id: str, index: int, message: dict) -> dict:
    part = "output_text" if message["role"] == "assistant" else "input_text"
    content: dict[str, Any] = {"type": part, "text": message["content"]}
    if part == "output_text":
        content.update(annotations=[], logprobs=[])
    item_id = f"msg_{job_id.removeprefix('job_')}_in{index:04d}"
    if message["role"] == "assistant":
        return {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                "content": [content]}
    return {"id": item_id, "type": "message", "role": message["role"], "status": "completed",
            "content": [content]}


# The event stream ------------------------------------------------------------------

TERMINAL_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete",
                  "failed": "response.failed", "cancelled": "response.cancelled"}


class EventStream:
    """A job's event log, entry by entry, as the Responses API's typed events.

    `opening()` gives `response.created`; `feed(type, data)` the events one job event
    makes (a `done` ends the stream with the output's `.done` events and the terminal
    event). Numbering starts at 0 and depends on the log alone.
    """

    def __init__(self, job: dict, row: Any):
        self.job = job  # the envelope as the stream starts (its fixed fields are used)
        self.row = row
        self.seq = -1
        self.started = False  # response.in_progress sent
        self.item_open = False
        self.text: list[str] = []
        self.retry: str | None = None  # after a restart: the new attempt's text so far
        self.ended = False
        self.item_id = message_item(job["id"], "", "in_progress")["id"]

    def _ev(self, type_: str, **fields: Any) -> dict:
        self.seq += 1
        return {"type": type_, "sequence_number": self.seq, **fields}

    def _snapshot(self, status: str) -> dict:
        return response_object({**self.job, "output": None, "error": None}, self.row,
                               status=status)

    def opening(self) -> list[dict]:
        return [self._ev("response.created", response=self._snapshot("queued"))]

    def _in_progress(self) -> list[dict]:
        if self.started:
            return []
        self.started = True
        return [self._ev("response.in_progress", response=self._snapshot("in_progress"))]

    def _open_item(self) -> list[dict]:
        if self.item_open:
            return []
        self.item_open = True
        return self._in_progress() + [
            self._ev("response.output_item.added", output_index=0,
                     item={**message_item(self.job["id"], "", "in_progress"), "content": []}),
            self._ev("response.content_part.added", item_id=self.item_id, output_index=0,
                     content_index=0, part={"type": "output_text", "text": "",
                                            "annotations": [], "logprobs": []}),
        ]

    def _delta(self, text: str) -> dict:
        self.text.append(text)
        return self._ev("response.output_text.delta", item_id=self.item_id, output_index=0,
                        content_index=0, delta=text, logprobs=[])

    def feed(self, type_: str, data: dict) -> list[dict]:
        if self.ended:
            return []
        if type_ == "status" and data.get("status") == "running":
            if data.get("restarted") and self.text:
                self.retry = ""  # a new attempt: its text is matched against what was sent
            return self._in_progress()
        if type_ == "token" and data.get("text"):
            text = self._new_text(data["text"])
            return self._open_item() + [self._delta(text)] if text else []
        if type_ == "done":
            return self._end(data)
        return []

    def _new_text(self, text: str) -> str:
        """What a token adds to the text already sent. Sent text cannot be taken back:
        after a restart (the worker died, the provider's stream broke), the new attempt's
        text is sent only where it goes beyond the text already sent and continues it (a
        deterministic model's retry does); text that differs waits for `.done`, which
        carries the text that counts."""
        if self.retry is None:
            return text
        self.retry += text
        sent = "".join(self.text)
        if len(self.retry) <= len(sent) or not self.retry.startswith(sent):
            return ""
        new, self.retry = self.retry[len(sent):], None
        return new

    def _end(self, env: dict) -> list[dict]:
        self.ended = True
        final = response_object(env, self.row)
        status = final["status"]
        out: list[dict] = []
        if final["output"] or self.item_open:
            item = final["output"][0] if final["output"] else message_item(
                env["id"], "".join(self.text), "incomplete")  # a failure kept no text
            part = item["content"][0]
            text = part["text"]
            if not self.item_open:
                out += self._open_item()
            if text and not self.text:  # the log had no tokens (expired, or never written)
                out.append(self._delta(text))
            out += [
                self._ev("response.output_text.done", item_id=self.item_id, output_index=0,
                         content_index=0, text=text, logprobs=[]),
                self._ev("response.content_part.done", item_id=self.item_id, output_index=0,
                         content_index=0, part=part),
                self._ev("response.output_item.done", output_index=0, item=item),
            ]
        return out + [self._ev(TERMINAL_EVENT[status], response=final)]


def is_response_id(value: str) -> bool:
    return value.startswith(RESPONSE_PREFIX)


__all__ = ["EventStream", "ResponseRequest", "batch_job", "batch_response_body", "input_item",
           "parse_response_request", "response_object", "status_of"]
