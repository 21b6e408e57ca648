"""Many jobs at once through one runtime instance, as an `llm` worker's threads run them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fakes.providers import expected_text, ok
from tests.workers.providers.conftest import WatchedContext, make_job

JOBS = 200
THREADS = 32
#: each reply takes 5 deltas x 0.2 s = 1 s, so one at a time would take 200 s
REPLY = ok(tokens=5, delay=0.2)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_200_slow_jobs_in_32_threads_share_one_runtime(provider, fake, make_runtime):
    fake.default = REPLY
    runtime = make_runtime(worker_concurrency=THREADS)
    contexts = [WatchedContext() for _ in range(JOBS)]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(
            lambda ctx: runtime.generate(make_job(provider, prompt="slow one"), ctx), contexts
        ))
    wall = time.monotonic() - started
    print(f"\n{provider}: {JOBS} jobs x 1 s in {THREADS} threads: {wall:.2f} s wall "
          f"(ideal {JOBS / THREADS:.2f} s), {fake.connections_opened} connections")

    assert all(r.text == expected_text(5) and r.completion_tokens == 5 for r in results)
    assert all(ctx.retries == [] for ctx in contexts)
    assert len(fake.requests) == JOBS
    assert wall < 30, f"{JOBS} jobs took {wall:.1f} s"
    # One pool for the runtime: at most one connection per thread at a time (plus the
    # ones the OpenAI SDK cannot hand back, see test_streaming).
    assert fake.connections_opened <= (JOBS if provider in ("openai", "xai") else THREADS)
