"""Request bodies of the native API, validated before anything is written, and the job
envelope (common.jobs.envelope) as the API documents it."""

from __future__ import annotations

from typing import Annotated, Any, Literal, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# The longest `expires_after` a job or a response may ask for: a year.
MAX_EXPIRES_AFTER_S = 365 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@overload
def check_metadata(v: dict[str, str]) -> dict[str, str]: ...
@overload
def check_metadata(v: None) -> None: ...
def check_metadata(v: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's metadata limits, for jobs and batches alike."""
    if v and (len(v) > 16 or any(len(k) > 64 or len(s) > 512 for k, s in v.items())):
        raise ValueError("metadata takes at most 16 pairs, keys up to 64 and values 512 chars")
    return v


class Message(_Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class GenerateParams(_Strict):
    max_tokens: int = Field(256, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    # Only for debug/echo: a wait before each word, to drive slow jobs in tests.
    delay_ms: float = Field(0, ge=0, le=60_000)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (len(v) > 4 or any(not s for s in v)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return v


# What the validators below enforce, for the OpenAPI document: `input` is checked
# against GenerateInput or EmbedInput by `kind`, and metadata has its limits.
_INPUT_DOC = {"anyOf": [
    {"type": "object", "required": ["prompt"], "additionalProperties": False,
     "properties": {"prompt": {"type": "string"}, "messages": {"type": "null"}}},
    {"type": "object", "required": ["messages"], "additionalProperties": False,
     "properties": {"messages": {"type": "array", "minItems": 1,
                                 "items": Message.model_json_schema()},
                    "prompt": {"type": "null"}}},
    {"type": "object", "required": ["texts"], "additionalProperties": False,
     "properties": {"texts": {"type": "array", "minItems": 1, "items": {"type": "string"}}}},
], "description": "generate: {prompt} or {messages}; embed: {texts}"}
METADATA_DOC: dict[str, Any] = {"maxProperties": 16, "propertyNames": {"maxLength": 64},
                "additionalProperties": {"type": "string", "maxLength": 512}}


class JobCreate(_Strict):
    kind: Literal["generate", "embed"] = "generate"
    model: str = Field(min_length=3, max_length=200)
    input: Annotated[dict[str, Any], WithJsonSchema(_INPUT_DOC)]
    params: GenerateParams = Field(default_factory=GenerateParams)
    priority: Literal["interactive", "batch"] = "interactive"
    metadata: dict[str, str] = Field(default_factory=dict, json_schema_extra=METADATA_DOC)
    timeout_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    start_by_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    # Called when the job starts or ends, as Replicate's predictions do (common/webhooks.py).
    webhook: str | None = Field(None, min_length=8, max_length=2000,
                                pattern=r"^[hH][tT][tT][pP][sS]?://[^\s]+$")
    webhook_events_filter: list[Literal["start", "completed"]] | None = Field(
        None, min_length=1, max_length=2)
    # Seconds after the job ends that it is deleted, in place of MONKEY_RETENTION_DAYS.
    expires_after: int | None = Field(
        None, ge=1, le=MAX_EXPIRES_AFTER_S,
        description="Seconds after the job ends that it is deleted (at most a year); "
                    "unset: after MONKEY_RETENTION_DAYS.")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str]) -> dict[str, str]:
        return check_metadata(v)

    @model_validator(mode="after")
    def _input_shape(self) -> JobCreate:
        if self.kind == "embed":
            self.input = EmbedInput.model_validate(self.input).model_dump()
        else:
            self.input = GenerateInput.model_validate(self.input).model_dump(exclude_none=True)
        return self

    def prompt_chars(self) -> int:
        if self.kind == "embed":
            return sum(len(t) for t in self.input["texts"])
        if "messages" in self.input:
            return sum(len(m["content"]) for m in self.input["messages"])
        return len(self.input["prompt"])


class GenerateInput(_Strict):
    prompt: str | None = None
    messages: list[Message] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> GenerateInput:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("generate input takes exactly one of 'prompt' or 'messages'")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self


class EmbedInput(_Strict):
    texts: list[str] = Field(min_length=1)


class JobErrorOut(BaseModel):
    type: str
    message: str


class JobEnvelope(_Strict):
    """What GET /v1/jobs/{id} and the `done` event carry; its fields are those of
    common.jobs.envelope (docs/architecture.md, "The job"), and extra="forbid" keeps the
    two equal."""

    id: str
    object: Literal["job"]
    kind: Literal["generate", "embed"]
    model: str
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled",
                    "expired"]
    priority: Literal["interactive", "batch"]
    queue: str
    input: dict[str, Any]
    params: dict[str, Any]
    output: dict[str, Any] | None
    error: JobErrorOut | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    start_by: str | None
    timeout_s: float | None
    metadata: dict[str, str]
    metrics: dict[str, Any]
    batch_id: str | None


class JobList(_Strict):
    object: Literal["list"]
    data: list[JobEnvelope]
    has_more: bool
    first_id: str | None
    last_id: str | None
