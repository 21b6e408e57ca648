"""A job's input and params, checked once and in the neutral shape the providers map from."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import JobInvalid
from workers.runtimes.base import JobSpec

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @classmethod
    def from_job(cls, job: JobSpec) -> GenerationParams:
        p = job.params or {}
        stop = p.get("stop")
        if stop is None:
            stops: tuple[str, ...] = ()
        elif isinstance(stop, str):
            stops = (stop,)
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            stops = tuple(stop)
        else:
            raise JobInvalid("params.stop must be a string or a list of strings")
        return cls(
            max_tokens=_number(p, "max_tokens", int, minimum=1),
            temperature=_number(p, "temperature", float, minimum=0),
            top_p=_number(p, "top_p", float, minimum=0),
            stop=stops,
            seed=_number(p, "seed", int),
        )


def _number(params: dict, name: str, kind: type, minimum: float | None = None):
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        kind is int and not float(value).is_integer()
    ):
        raise JobInvalid(f"params.{name} must be {'an integer' if kind is int else 'a number'}")
    if minimum is not None and value < minimum:
        raise JobInvalid(f"params.{name} must be at least {minimum}")
    return kind(value)


def messages_of(job: JobSpec) -> list[Message]:
    try:
        raw = job.messages()
    except (KeyError, TypeError) as exc:
        raise JobInvalid("input needs a prompt or a list of messages") from exc
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise JobInvalid(f"input.messages[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise JobInvalid(f"input.messages[{i}].content must be a string")
        out.append(Message(m["role"], m["content"]))
    if not any(m.role != "system" for m in out):
        raise JobInvalid("input needs at least one user or assistant message")
    return out


def split_system(messages: list[Message]) -> tuple[str | None, list[Message]]:
    """System messages joined into one instruction (Anthropic's `system`, Gemini's
    `system_instruction`), and the conversation without them."""
    system = [m.content for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    return ("\n\n".join(system) if system else None), rest


__all__ = ["GenerationParams", "Message", "messages_of", "split_system"]
