"""Small helpers shared by the local runtime's tests (no fixtures here)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from workers.runtimes.testing import RecordingContext


class HookContext(RecordingContext):
    """A RecordingContext that calls `on_token(ctx)` after each streamed token."""

    def __init__(self, on_token=None, **kw):
        super().__init__(**kw)
        self.on_token = on_token

    def token(self, text: str) -> None:
        super().token(text)
        if self.on_token is not None:
            self.on_token(self)


def run_concurrently(fns):
    """Start every callable at the same moment (a barrier) and return their results in order."""
    barrier = threading.Barrier(len(fns))

    def call(fn):
        barrier.wait(timeout=10)
        return fn()

    with ThreadPoolExecutor(len(fns)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(call, fn) for fn in fns]]


def cosine(a, b) -> float:
    import math

    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
