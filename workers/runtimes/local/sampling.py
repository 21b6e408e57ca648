"""Generation parameters and per-row sampling.

Each job samples with its own torch.Generator, so a seed gives the same text whether the
job ran alone or in a batch with others (the batch changes nothing in a row's draws).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from common.errors import JobInvalid

DEFAULT_MAX_TOKENS = 256
MAX_STOP_STRINGS = 8


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def from_params(cls, params: dict) -> SamplingParams:
        try:
            max_tokens = (int(params["max_tokens"]) if params.get("max_tokens") is not None
                          else DEFAULT_MAX_TOKENS)
            temperature = float(params.get("temperature") or 0.0)
            top_p = float(params["top_p"]) if params.get("top_p") is not None else 1.0
            seed = int(params["seed"]) if params.get("seed") is not None else None
        except (TypeError, ValueError) as exc:
            raise JobInvalid(f"bad generation parameter: {exc}") from exc
        stop = params.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOP_STRINGS:
            raise JobInvalid(f"stop must be a string or a list of at most {MAX_STOP_STRINGS}")
        if max_tokens < 1:
            raise JobInvalid("max_tokens must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise JobInvalid("temperature must be >= 0 and top_p in (0, 1]")
        return cls(max_tokens, temperature, top_p, seed, tuple(stop))

    def generator(self, device: str) -> torch.Generator | None:
        if self.greedy:
            return None
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed if self.seed is not None else secrets.randbits(63))
        return gen


def sample_rows(logits: torch.Tensor, rows) -> list[int]:
    """One token per row of `logits` [B, V]; `rows[i].params` and `rows[i].generator`."""
    chosen = logits.argmax(dim=-1)
    for i, row in enumerate(rows):
        if not row.params.greedy:
            chosen[i] = _sample(logits[i], row.params, row.generator)
    return chosen.tolist()


def _sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> torch.Tensor:
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=gen)[0]
    # Nucleus: keep the smallest set of most likely tokens whose mass reaches top_p.
    sorted_probs, order = probs.sort(descending=True)
    outside = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
    sorted_probs[outside] = 0.0
    return order[torch.multinomial(sorted_probs, 1, generator=gen)[0]]
