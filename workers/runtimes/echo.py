"""`debug/echo`: streams its prompt back word by word, no model and no torch.

It drives the whole path (queue, lifecycle, events, SSE) in tests and benchmarks.
`params.delay_ms` waits before each word; `max_tokens` and `stop` apply as for a model.
"""

from __future__ import annotations

import re

from common.errors import JobInvalid
from workers.runtimes.base import GenerateResult, JobSpec, RunContext, Runtime

_WORD = re.compile(r"\S+\s*")


class EchoRuntime(Runtime):
    def generate(self, job: JobSpec, ctx: RunContext) -> GenerateResult:
        if job.model_name != "echo":
            raise JobInvalid(f"unknown debug model {job.model}")
        text = "\n".join(m["content"] for m in job.messages())
        words = _WORD.findall(text)
        max_tokens = int(job.params.get("max_tokens") or len(words))
        delay = float(job.params.get("delay_ms") or 0) / 1000
        stops = job.params.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops

        out: list[str] = []
        emitted = 0
        finish = "stop"
        for i, word in enumerate(words):
            if i >= max_tokens:
                finish = "length"
                break
            if (delay and ctx.wait(delay)) or ctx.should_stop():
                finish = "cancelled"
                break
            done = "".join(out)
            hit = _first_stop(done + word, stops)
            if hit is not None:
                # Stream only what comes before the stop string, as a model would.
                kept = (done + word)[:hit]
                if len(kept) > len(done):
                    ctx.token(kept[len(done):])
                out = [kept] if kept else []
                emitted += 1 if len(kept) > len(done) else 0
                break
            ctx.token(word)
            out.append(word)
            emitted += 1
        return GenerateResult(
            text="".join(out), finish_reason=finish, prompt_tokens=len(words),
            completion_tokens=emitted,
        )


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [text.index(s) for s in stops if s in text]
    return min(found) if found else None
