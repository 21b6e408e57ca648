"""Batch API lines of `debug/embed` simulating an accelerator of a given speed: what the
system delivers over what the model alone could (JSON out).

`debug/embed` (workers/runtimes/debug_embed.py) makes its vectors from the text and
takes MONKEY_DEBUG_EMBED_BATCH_MS + MONKEY_DEBUG_EMBED_TEXT_US per text for each forward
pass, one pass at a time per worker process: with 0 ms and 50 us it stands in for a
device that embeds 20,000 texts/s. A batch of one-text `/v1/embeddings` lines runs on
its own stack (bench/stack.py, one llm worker) from files.create to `completed`.

Reports lines/s, the model's own rate, their ratio (the fraction of the time the
simulated device was busy), the phases of the batch (validated, enqueued, first line
started, last finished, completed) and the CPU seconds of each process over the batch,
which say what bounds it.

    python bench/debug_embed.py [--lines 20000] [--rate 20000] [--batch-ms 0]
                                [--chunk-lines 64] [--concurrency 32] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.batch_echo import phases, run_batch  # noqa: E402
from bench.stack import BenchStack  # noqa: E402

ENDPOINT = "/v1/embeddings"


def batch_file(n: int) -> bytes:
    return b"".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": ENDPOINT,
        "body": {"model": "debug/embed", "input": f"line {i} says hello to the model"},
    }).encode() + b"\n" for i in range(n))


def cpu_seconds(procs) -> dict[str, float]:
    """CPU seconds so far of each service, its children (the API's control process)
    included."""
    import psutil

    out = {}
    for name, proc in procs.items():
        total = 0.0
        try:
            p = psutil.Process(proc.pid)
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
        out[name] = total
    return out


def measure(*, lines: int, rate: float, batch_ms: float, chunk_lines: int,
            concurrency: int, postgres: str | None) -> dict:
    import openai

    text_us = 1e6 / rate
    stack = BenchStack(postgres_url=postgres, env={
        "MONKEY_DEBUG_EMBED_BATCH_MS": str(batch_ms),
        "MONKEY_DEBUG_EMBED_TEXT_US": str(text_us),
        "MONKEY_BATCH_CHUNK_LINES": str(chunk_lines)})
    try:
        stack.start_api()
        api = stack.procs[-1]
        worker = stack.start_worker("llm", concurrency)
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0,
                               timeout=600)
        run_batch(client, batch_file(200), endpoint=ENDPOINT)  # warm-up
        time.sleep(2)
        data = batch_file(lines)
        procs = {"api_and_control": api, "llm_worker": worker}
        cpu0 = cpu_seconds(procs)
        elapsed, batch = run_batch(client, data, endpoint=ENDPOINT)
        cpu1 = cpu_seconds(procs)
        steps = phases(stack, batch.id)
    finally:
        stack.close()
    # The device's own time: one pass per chunk of one-text lines.
    passes = -(-lines // chunk_lines)
    model_s = passes * batch_ms / 1000 + lines * text_us / 1e6
    model_rate = lines / model_s
    run_s = (steps["last_line_finished"] or 0) - (steps["first_line_started"] or 0)
    return {
        "bench": "debug_embed",
        "database": "postgres" if postgres else "sqlite",
        "lines": lines,
        "chunk_lines": chunk_lines,
        "worker_threads": concurrency,
        "simulated": {"batch_ms": batch_ms, "text_us": round(text_us, 3),
                      "texts_per_s": round(model_rate, 1), "device_busy_s": round(model_s, 3)},
        "create_to_completed_s": round(elapsed, 3),
        "lines_per_s": round(lines / elapsed, 1),
        # = the fraction of the time the simulated device was busy
        "ratio_to_model": round(lines / elapsed / model_rate, 4),
        "request_counts": batch.request_counts.model_dump(),
        "phases_s": steps,
        "lines_per_s_first_start_to_last_finish": round(lines / run_s, 1) if run_s > 0 else None,
        "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=20_000, help="texts/s of the simulated device")
    ap.add_argument("--batch-ms", type=float, default=0.0, help="fixed cost per forward pass")
    ap.add_argument("--chunk-lines", type=int, default=64, help="MONKEY_BATCH_CHUNK_LINES")
    ap.add_argument("--concurrency", type=int, default=32, help="task threads of the worker")
    ap.add_argument("--postgres", default=None, metavar="URL")
    args = ap.parse_args()
    out = measure(lines=args.lines, rate=args.rate, batch_ms=args.batch_ms,
                  chunk_lines=args.chunk_lines, concurrency=args.concurrency,
                  postgres=args.postgres)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
