"""SIGTERM to a gpu worker in the middle of local generations (torch, the threads pool,
one executor thread per model): the worker exits 0 within MONKEY_DRAIN_S, and every job
it ran has finished or is back in the queue, its message on the `gpu` list, by then.

The redeploy this covers: a gpu worker given SIGTERM was still alive 6 s later and had
to be SIGKILLed, its jobs then waiting for their leases to lapse."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from workers.runtimes.local.tiny import build_tiny_lm

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DRAIN_S = 2.0


@pytest.fixture(scope="module")
def slow_lm_path(tmp_path_factory) -> str:
    return build_tiny_lm(tmp_path_factory.mktemp("slow-lm"), hidden=512, layers=8)


def test_sigterm_mid_generation_exits_0_with_each_job_done_or_requeued(make_stack,
                                                                       slow_lm_path):
    stack = make_stack("sqlite", env={
        "MONKEY_LOCAL_MODELS": f"slow={slow_lm_path}", "MONKEY_DEVICE": "cpu",
        "MONKEY_DRAIN_S": str(DRAIN_S)})
    worker = stack.start_worker("gpu", concurrency=8, timeout=180)
    # Four rows batched together, each to the model's 240-token limit: seconds of work.
    jobs = [stack.submit(model="local/slow", input={"prompt": f"the monkey {i}"},
                         params={"max_tokens": 240}) for i in range(4)]
    for job in jobs:
        stack.wait(job["id"], until={"running"}, timeout=30)
    stack.events(jobs[0]["id"], limit=3)  # running and two tokens: generation is under way

    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    exit_s = time.monotonic() - t0
    after = [stack.get(j["id"]) for j in jobs]
    r = redis.Redis.from_url(stack.redis_url)

    assert worker.returncode == 0, stack.logs()
    assert exit_s < DRAIN_S, exit_s
    requeued = [j for j in after if j["status"] == "queued"]
    assert all(j["status"] in ("queued", "succeeded") for j in after), after
    assert requeued, "every generation finished inside the window: nothing was handed back"
    assert all(j["attempts"] == 1 and j["output"] is None for j in requeued)
    assert (r.hlen("unacked"), r.llen("gpu")) == (0, len(requeued))
    print(f"\ngpu worker: sigterm to exit {exit_s:.2f}s, {len(requeued)} of 4 handed back")
