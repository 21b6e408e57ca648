"""What a runtime is given and what it returns.

A runtime turns one job into a result. The lifecycle (workers/lifecycle.py) owns the
job's status, lease, events and database writes; a runtime only computes, reporting
tokens through its `RunContext` and stopping when the context says so.
"""

from __future__ import annotations

import threading
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class JobSpec:
    id: str
    kind: str  # "generate" | "embed"
    model: str  # "PROVIDER/NAME"
    input: dict
    params: dict
    attempt: int
    timeout_s: float | None = None

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def model_name(self) -> str:
        return self.model.split("/", 1)[1]

    def messages(self) -> list[dict]:
        """The input as chat messages ([{role, content}]), whichever form it came in."""
        if "messages" in self.input:
            return list(self.input["messages"])
        return [{"role": "user", "content": self.input["prompt"]}]


class RunContext(Protocol):
    """The lifecycle's side of a running job, handed to the runtime."""

    #: set when the job must stop: cancelled, past its timeout, or its lease was lost
    stop_event: threading.Event

    def should_stop(self) -> bool: ...

    def stop_reason(self) -> str | None:
        """"cancelled", "timeout", "lease_lost" or None."""

    def on_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (from another thread) as soon as the job must stop, for example
        to close a provider's HTTP stream. Returns a function that unregisters it."""

    def token(self, text: str) -> None:
        """One produced token (or text delta): appended to the job's event stream."""

    def restart(self, reason: str) -> None:
        """Throw away the text streamed so far (a provider retry after a partial stream);
        clients are told with a `status` event and the new text follows."""

    def progress(self, **data) -> None:
        """A `progress` event (free-form, JSON-serialisable)."""

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early if the job must stop; returns True if it must stop."""

    def count_retry(self, error_type: str) -> None:
        """Record one retried attempt against a provider (metrics and the job's metrics)."""


@dataclass
class GenerateResult:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    prompt_tokens: int = 0
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = len(self.embeddings[0]) if self.embeddings else 0


class Runtime(ABC):  # noqa: B024 - every method has a default
    """One per model family and worker process; `load()` runs once before the first job."""

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights, open clients. Runs once per process, never at import."""

    def generate(self, job: JobSpec, ctx: RunContext) -> GenerateResult:
        from common.errors import JobInvalid

        raise JobInvalid(f"model {job.model} does not generate text")

    def embed(self, job: JobSpec, ctx: RunContext) -> EmbedResult:
        from common.errors import JobInvalid

        raise JobInvalid(f"model {job.model} does not embed text")

    def embed_many(self, jobs: list[tuple[JobSpec, RunContext]]
                   ) -> list[EmbedResult | Exception]:
        """Embed many jobs (a chunk of batch lines): each job's result or the error
        that ended it, in order. A runtime that batches hands them all to the model at
        once; this default runs them one after the other."""
        out: list[EmbedResult | Exception] = []
        for job, ctx in jobs:
            try:
                out.append(self.embed(job, ctx))
            except Exception as exc:  # the caller ends that job with it
                out.append(exc)
        return out

    def loaded_models(self) -> list[str]:
        """Models this runtime holds in memory now (for GET /v1/models' loaded_on)."""
        return []
