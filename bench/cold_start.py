"""Cold start of the ML service scaled to zero, and the cost of a /metrics scrape.

A throwaway stack: the API (and its control process, which wakes the ML service through
ML_SERVICE_URL) and `monkey ml-service` with its worker asleep. Each round submits a
job for the tiny local model and times submit -> first token over SSE; the worker then
exits idle and the service sleeps again. A warm round (the worker already up) is the
baseline. The scrape cost is the API's /metrics answered with the queue gauges
recomputed each time (MONKEY_QUEUE_METRICS_TTL_S=0) and with the 5 s cache.

    python bench/cold_start.py [--rounds 3] [--device cpu|auto]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import BenchStack, _wait, percentiles  # noqa: E402
from monkey.embedded import free_port  # noqa: E402
from workers.runtimes.local.tiny import build_tiny_lm  # noqa: E402

BODY = {"model": "local/tiny", "input": {"prompt": "the monkey"}, "params": {"max_tokens": 8}}


def first_token_s(stack: BenchStack) -> float:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {stack.key}", "Accept": "text/event-stream"}
    with httpx.stream("POST", f"{stack.url}/v1/jobs", json=BODY, headers=headers,
                      timeout=300) as resp:
        for line in resp.iter_lines():
            if line == "event: token":
                elapsed = time.monotonic() - started
                break
        else:
            raise RuntimeError("no token event")
        for _ in resp.iter_lines():  # to the end of the job
            pass
    return elapsed


def health(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except httpx.HTTPError:
        return {}


def scrape_ms(url: str, n: int = 20) -> dict:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        httpx.get(f"{url}/metrics", timeout=10).raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    return percentiles(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    tiny = build_tiny_lm(Path(tempfile.mkdtemp(prefix="tiny-lm-")))
    port = free_port()
    stack = BenchStack(env={
        "MONKEY_LOCAL_MODELS": f"tiny={tiny}", "MONKEY_DEVICE": args.device,
        "ML_SERVICE_URL": f"http://127.0.0.1:{port}", "MONKEY_RATE_LIMIT_PER_S": "0",
        "MONKEY_QUEUE_METRICS_TTL_S": "0",
    })
    try:
        stack.start_api()
        ml = stack.spawn("ml-service", ["ml-service", "--port", str(port),
                                        "--idle-exit", "2"])
        _wait(lambda: health(port).get("status") == "sleeping", 60, "ml service", ml)
        cold, warm = [], []
        for _ in range(args.rounds):
            cold.append(first_token_s(stack))
            warm.append(first_token_s(stack))  # the worker is still up
            _wait(lambda: health(port).get("status") == "sleeping", 120, "back asleep", ml)
        uncached = scrape_ms(stack.url)
        print(json.dumps({
            "cold_start_submit_to_first_token_s": [round(x, 2) for x in cold],
            "warm_submit_to_first_token_ms": [round(x * 1000, 1) for x in warm],
            "worker_starts": health(port).get("starts"),
            "metrics_scrape_uncached": uncached,
            "device": args.device,
        }))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
