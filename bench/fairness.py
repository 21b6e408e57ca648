"""Fair share between keys: two keys' batches submitted one second apart, each key's
completed lines over time (JSON out), and a plot of both curves.

Starts its own stack (bench/stack.py: a private redis-server, SQLite or a fresh Postgres
database, the API with its control process, one llm worker), creates two keys (the
second with --weight2), and submits a batch of `debug/echo` lines for each through the
official `openai` SDK, the second a second after the first. Both are followed with
batches.retrieve until completed. First come, first served, the second key's batch
would wait behind all of the first's lines and take about twice as long; with the batch
window (api/services/batch_fair.py) both advance together.

Reports each key's curve (seconds since its own submit, lines completed), its time to
complete, and the fairness figure: the second key's time over the first's (1.0 is even;
about 2 is first come, first served). Writes artifacts/fairness.png.

    python bench/fairness.py [--lines 5000] [--concurrency 16] [--delay-ms 10]
                             [--weight2 1] [--window 500] [--chunk-lines 64]
                             [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.stack import BenchStack  # noqa: E402
from common.keys import create_api_key  # noqa: E402

ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "fairness.png"
POLL_S = 0.25


def batch_file(n: int, tag: str, delay_ms: int) -> bytes:
    params = {"delay_ms": delay_ms} if delay_ms else {}
    return b"".join(json.dumps({
        "custom_id": f"{tag}{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "debug/echo", **params,
                 "messages": [{"role": "user", "content": f"line {i} of {tag}"}]},
    }).encode() + b"\n" for i in range(n))


class Follower(threading.Thread):
    """Submits one key's batch at `start_at` and samples its completed lines."""

    def __init__(self, client, data: bytes, start_at: float, origin: float):
        super().__init__(daemon=True)
        self.client, self.data, self.start_at, self.origin = client, data, start_at, origin
        self.curve: list[tuple[float, int]] = []  # (seconds since the first submit, done)
        self.submitted = self.took = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            f = self.client.files.create(file=("bench.jsonl", self.data), purpose="batch")
            time.sleep(max(self.start_at - time.monotonic(), 0))
            self.submitted = time.monotonic()
            batch = self.client.batches.create(input_file_id=f.id,
                                               endpoint="/v1/chat/completions",
                                               completion_window="24h")
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(POLL_S)
                batch = self.client.batches.retrieve(batch.id)
                self.curve.append((round(time.monotonic() - self.origin, 2),
                                   batch.request_counts.completed))
            if batch.status != "completed":
                raise RuntimeError(f"batch ended {batch.status}: {batch.errors}")
            self.took = time.monotonic() - self.submitted
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def plot(followers: list[Follower], names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for f, name in zip(followers, names, strict=True):
        ax.plot([t for t, _ in f.curve], [n for _, n in f.curve], label=name)
    ax.set_xlabel("seconds since the first key's submit")
    ax.set_ylabel("lines completed")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    ARTIFACT.parent.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(ARTIFACT, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=5000, help="lines per key")
    ap.add_argument("--concurrency", type=int, default=16, help="task threads of the worker")
    # Four words a line: about 40 ms each, so that the lines, not the machinery, take
    # the time (with no delay 10,000 lines are through in about 5 s).
    ap.add_argument("--delay-ms", type=int, default=10, help="debug/echo's delay per word")
    ap.add_argument("--weight2", type=float, default=1.0, help="the second key's weight")
    ap.add_argument("--window", type=int, default=500, help="MONKEY_BATCH_WINDOW")
    ap.add_argument("--chunk-lines", type=int, default=64, help="MONKEY_BATCH_CHUNK_LINES")
    ap.add_argument("--postgres", default=None, metavar="URL")
    args = ap.parse_args()

    import openai

    stack = BenchStack(postgres_url=args.postgres,
                       env={"MONKEY_BATCH_WINDOW": str(args.window),
                            "MONKEY_BATCH_CHUNK_LINES": str(args.chunk_lines)})
    try:
        stack.start_api()
        stack.start_worker("llm", args.concurrency)
        keys = [asyncio.run(create_api_key(stack.settings, "first")),
                asyncio.run(create_api_key(stack.settings, "second", args.weight2))]
        clients = [openai.OpenAI(base_url=stack.url + "/v1", api_key=k, max_retries=0,
                                 timeout=600) for k in keys]
        origin = time.monotonic() + 2.0  # both files uploaded before the first submit
        followers = [Follower(c, batch_file(args.lines, tag, args.delay_ms), origin + i,
                              origin)
                     for i, (c, tag) in enumerate(zip(clients, "ab", strict=True))]
        for f in followers:
            f.start()
        for f in followers:
            f.join()
            if f.error is not None:
                raise f.error
    finally:
        stack.close()
    took = [round(f.took, 2) for f in followers]
    out = {
        "bench": "fairness",
        "database": "postgres" if args.postgres else "sqlite",
        "lines_per_key": args.lines,
        "worker_threads": args.concurrency,
        "delay_ms": args.delay_ms,
        "batch_window": args.window,
        "chunk_lines": args.chunk_lines,
        "weights": [1.0, args.weight2],
        "submitted_apart_s": 1.0,
        "completed_s": took,
        # The second key's time to complete over the first's: 1.0 is even; first come,
        # first served it would be about 2.
        "fairness_ratio": round(took[1] / took[0], 3),
        "curves": {name: f.curve for name, f in zip(("first", "second"), followers,
                                                      strict=True)},
        "plot": str(ARTIFACT.relative_to(ARTIFACT.parent.parent)),
    }
    plot(followers, [f"first key (weight 1): {took[0]} s",
                     f"second key (weight {args.weight2:g}, 1 s later): {took[1]} s"],
         f"{args.lines} lines per key, window {args.window}: ratio {out['fairness_ratio']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
