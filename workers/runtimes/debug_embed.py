"""`debug/embed`: a diagnostic embedding model with no torch and no weights.

A text's vector is derived from the text alone (SHAKE-256 of its UTF-8 bytes, one
signed byte per dimension, scaled to unit length): the same text always gives the
same 384 floats, on every machine. Its forward pass takes a set time, a fixed cost
per pass plus a cost per text (MONKEY_DEBUG_EMBED_BATCH_MS, MONKEY_DEBUG_EMBED_TEXT_US),
so that a benchmark can stand in for an accelerator of a given speed on a machine
without one: 0 ms and 50 us is a device that embeds 20,000 texts/s.

The passes of one worker process take turns (one lock: one simulated device), as the
forward passes of one GPU do; a chunk of batch lines is one pass (`embed_many`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from array import array

from common.errors import JobInvalid
from workers.runtimes.base import EmbedResult, JobSpec, RunContext
from workers.runtimes.echo import EchoRuntime

DIM = 384


def vector(text: str, dim: int = DIM) -> list[float]:
    """The unit vector of `text`: deterministic, about uniform in direction."""
    raw = array("b", hashlib.shake_256(text.encode()).digest(dim))
    inv = 1 / (math.hypot(*raw) or 1.0)
    return [x * inv for x in raw]


class DebugRuntime(EchoRuntime):
    """The `debug` family: debug/echo generates (EchoRuntime), debug/embed embeds."""

    def __init__(self, batch_ms: float = 0.0, text_us: float = 0.0):
        self.batch_s = batch_ms / 1000
        self.text_s = text_us / 1_000_000
        self._device = threading.Lock()
        self.passes = 0  # forward passes run (tests, benchmarks)

    def pass_seconds(self, texts: int) -> float:
        return self.batch_s + texts * self.text_s

    def forward(self, texts: list[str]) -> list[list[float]]:
        """One forward pass: every text's vector, after the pass's simulated time."""
        # The vectors are made outside the device's turn (about 20 us a text of CPU, as
        # a host prepares its inputs); the turn itself lasts exactly the pass's time.
        vectors = [vector(t) for t in texts]
        with self._device:
            self.passes += 1
            due = self.pass_seconds(len(texts))
            if due > 0:
                time.sleep(due)
        return vectors

    def embed(self, job: JobSpec, ctx: RunContext) -> EmbedResult:
        texts = _texts(job)
        return EmbedResult(self.forward(texts), prompt_tokens=_tokens(texts))

    def embed_many(self, jobs: list[tuple[JobSpec, RunContext]]
                   ) -> list[EmbedResult | Exception]:
        out: list[EmbedResult | Exception] = []
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for job, _ in jobs:
            try:
                mine = _texts(job)
            except JobInvalid as exc:
                out.append(exc)
                continue
            out.append(EmbedResult([]))  # filled in below
            spans.append((len(out) - 1, len(texts)))
            texts.extend(mine)
        vectors = self.forward(texts) if texts else []
        ends = [start for _, start in spans[1:]] + [len(texts)]
        for (at, start), end in zip(spans, ends, strict=True):
            out[at] = EmbedResult(vectors[start:end], prompt_tokens=_tokens(texts[start:end]))
        return out


def _texts(job: JobSpec) -> list[str]:
    if job.model_name != "embed":
        raise JobInvalid(f"model {job.model} does not embed text")
    return list(job.input["texts"])


def _tokens(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)
