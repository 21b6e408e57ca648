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
import threading
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import BenchStack, _wait, percentiles  # noqa: E402
from monkey.embedded import free_port  # noqa: E402
from workers.runtimes.local.tiny import build_tiny_lm  # noqa: E402

BODY = {"model": "local/tiny", "input": {"prompt": "the monkey"}, "params": {"max_tokens": 8}}


def worker_ready(r: redis.Redis) -> bool:
    return any(r.hget(k, "ready") == b"1" for k in r.scan_iter(match="monkey:worker:*"))


def cold_round(stack: BenchStack, port: int) -> dict:
    """A cold start, split: the wake (the service starts its worker), the worker ready
    (Celery up, models loaded), the first token."""
    r = redis.Redis.from_url(stack.redis.url)
    marks: dict[str, float] = {}
    started = time.monotonic()

    def watch() -> None:
        while "ready" not in marks and time.monotonic() - started < 300:
            if "woken" not in marks and health(port).get("status") == "running":
                marks["woken"] = time.monotonic() - started
            if "woken" in marks and worker_ready(r):
                marks["ready"] = time.monotonic() - started
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first = first_token_s(stack, started)
    watcher.join(5)
    return {"woken_s": round(marks.get("woken", -1), 2),
            "worker_ready_s": round(marks.get("ready", -1), 2), "first_token_s": round(first, 2)}


def first_token_s(stack: BenchStack, started: float | None = None) -> float:
    started = time.monotonic() if started is None else started
    headers = {"Authorization": f"Bearer {stack.key}", "Accept": "text/event-stream"}
    with httpx.stream("POST", f"{stack.url}/v1/jobs", json=BODY, headers=headers,
                      timeout=300) as resp:
        lines = resp.iter_lines()
        for line in lines:
            if line == "event: token":
                elapsed = time.monotonic() - started
                break
        else:
            raise RuntimeError("no token event")
        for _ in lines:  # to the end of the job
            pass
    return elapsed


def health(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except httpx.HTTPError:
        return {}


def scrape_ms(url: str, n: int = 20) -> dict:
    times = []
    with httpx.Client(timeout=10) as client:  # one connection, as Prometheus keeps
        for _ in range(n):
            t = time.perf_counter()
            client.get(f"{url}/metrics").raise_for_status()
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
            cold.append(cold_round(stack, port))
            warm.append(first_token_s(stack))  # the worker is still up
            _wait(lambda: health(port).get("status") == "sleeping", 120, "back asleep", ml)
        uncached = scrape_ms(stack.url)
        compute = [line for line in httpx.get(f"{stack.url}/metrics").text.splitlines()
                   if line.startswith("monkey_queue_gauges_compute_seconds ")]
        print(json.dumps({
            "cold_start": cold,
            "warm_submit_to_first_token_ms": [round(x * 1000, 1) for x in warm],
            "worker_starts": health(port).get("starts"),
            "metrics_scrape_uncached": uncached,
            "queue_gauges_compute_ms": round(float(compute[0].split()[1]) * 1000, 2),
            "device": args.device,
        }))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
