"""The job machinery against what the model alone does, every figure of issue 17's table
side by side in one run (JSON on stdout):

- Batch API, `debug/echo` lines (a model that costs nothing), create -> completed, at
  10,000 and at 50,000 lines on one stack with one llm worker, and the ratio of the
  two rates (a line must not cost more in a bigger batch): bench/batch_echo.py;
- Batch API, 10,000 MiniLM embedding lines against SentenceTransformer.encode
  (batch_size=64) in this process: bench/batch.py;
- `debug/embed` simulating a device that embeds 20,000 texts/s, a 20,000-line batch,
  lines/s over the model's own rate, with the CPU seconds of each process that say
  what bounds it: bench/debug_embed.py;
- 256 one-text MiniLM jobs through the API against encode: bench/batching.py;
- Redis commands and Postgres transactions per interactive echo job (submit, run,
  result read back over SSE), idle traffic subtracted: bench/job_cost.py;
- a zero-delay echo job's round trip p50 against a bare Celery no-op's, interleaved
  on the same Redis: bench/overhead.py.

`table` puts each figure beside its target and the figure the issue started from.

    python bench/ceiling.py [--postgres URL] [--echo-lines 10000 50000]
                            [--embed-lines 10000] [--baseline-texts 2000] [--quick]

--postgres: the admin URL of a Postgres; the per-job transactions need it (default:
$DATABASE_URL when it is Postgres, else the local postgresql://postgres@127.0.0.1/test
when it answers; without one they are null). The batches and the round trips run on
SQLite (as batch_echo.py and overhead.py do by default) unless --batch-postgres.
--quick: small sizes, to check that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Idle OpenMP threads of the baselines must not spin while the stacks run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"

# Issue 17's targets, and its "now" figures (2-core machine, before this work).
TARGETS = {
    "batch_echo_10k_lines_per_s": (">=", 2000, "75"),
    "batch_echo_50k_over_10k": (">=", 0.8, "0.66 (75 at 10,000 over 114 at 5,000)"),
    "minilm_batch_over_encode": (">=", 0.8, "0.39"),
    "debug_embed_over_model": (None, None, "not measured"),
    "minilm_256_jobs_over_encode": (">=", 0.7, "0.12-0.13"),
    "redis_commands_per_echo_job": ("<=", 12, "21.5"),
    "pg_transactions_per_echo_job": ("<=", 3, "4.0"),
    "echo_p50_over_bare_celery_p50": ("<=", 2.5, "2.9-3.8"),
}


def postgres_url(given: str | None) -> str | None:
    if given:
        return given
    env = os.environ.get("DATABASE_URL", "")
    candidate = env if env.startswith("postgres") else LOCAL_PG
    try:
        import psycopg

        psycopg.connect(candidate, connect_timeout=2).close()
    except Exception:  # no Postgres here: the transactions are not counted
        return None
    return candidate


def echo_batches(sizes: list[int], postgres: str | None) -> dict:
    """The echo batches one after another on one stack (one llm worker)."""
    import redis

    from bench.batch_echo import batch_file, measure, open_client, run_batch
    from bench.stack import BenchStack

    stack = BenchStack(postgres_url=postgres)
    try:
        stack.start_api()
        stack.start_worker("llm", 32)
        r = redis.Redis.from_url(stack.redis.url)
        client = open_client(stack)
        run_batch(client, batch_file(100))  # warm-up
        time.sleep(2)
        return {str(n): measure(stack, client, r, n) for n in sizes}
    finally:
        stack.close()


def minilm_jobs(jobs: int, postgres: str | None) -> dict:
    """`jobs` one-text embed jobs through the API (one gpu worker) against encode."""
    from bench.batching import encode_baseline, texts, through_api
    from workers.runtimes.local.loading import pick_device
    from workers.runtimes.local.tiny import build_tiny_lm

    device = pick_device(os.environ.get("MONKEY_DEVICE", "auto"))
    items = texts(jobs, 16)
    baseline = encode_baseline(items, device)
    lm_dir = build_tiny_lm(tempfile.mkdtemp(prefix="monkey-tiny-lm-"))
    env = {"MONKEY_LOCAL_MODELS": f"tiny={lm_dir}", "MONKEY_DEVICE": device,
           "MONKEY_MAX_BATCH": "64", "MONKEY_MAX_WAIT_MS": "10"}
    api = through_api(items, env, 32, postgres)
    embed = api["embed"]
    return {"device": device, "encode_batch64": baseline, "through_api": embed,
            "ratio_to_encode": round(embed["jobs_per_s"] / baseline["texts_per_s"], 3)}


def on_stack(postgres: str | None, measure):
    """measure(stack) on a stack of its own (API and one llm worker)."""
    from bench.stack import BenchStack

    stack = BenchStack(postgres_url=postgres)
    try:
        stack.start_api()
        stack.start_worker("llm", 32)
        return measure(stack)
    finally:
        stack.close()


def per_job(postgres: str | None, jobs: int) -> dict:
    """Per-job Redis commands and Postgres transactions (on Postgres when there is one:
    SQLite keeps no count of transactions)."""
    from bench.job_cost import measure

    return on_stack(postgres, lambda stack: measure(stack, jobs=jobs))


def round_trips(postgres: str | None, samples: int) -> dict:
    """The echo round trips against bare Celery's (bench/overhead.py), on the batches'
    database, as overhead.py runs by default."""
    from bench.overhead import round_trips as trips

    return on_stack(postgres, lambda stack: trips(stack, samples))


def table(out: dict) -> dict:
    echo = out["batch_echo"]
    sizes = sorted(echo, key=int)
    small, large = echo[sizes[0]]["lines_per_s"], echo[sizes[-1]]["lines_per_s"]
    costs = out["per_job"]["post_then_events"]
    figures = {
        "batch_echo_10k_lines_per_s": small,
        "batch_echo_50k_over_10k": round(large / small, 3),
        "minilm_batch_over_encode": out["minilm_batch"]["batch_vs_direct"],
        "debug_embed_over_model": out["debug_embed"]["ratio_to_model"],
        "minilm_256_jobs_over_encode": out["minilm_jobs"]["ratio_to_encode"],
        "redis_commands_per_echo_job": costs["redis_commands_per_job"],
        "pg_transactions_per_echo_job": costs.get("pg_transactions_per_job"),
        "echo_p50_over_bare_celery_p50": out["round_trips"]["echo_p50_over_celery_p50"],
    }
    rows = {}
    for name, value in figures.items():
        op, target, before = TARGETS[name]
        met = None
        if op is not None and value is not None:
            met = value >= target if op == ">=" else value <= target
        rows[name] = {"measured": value, "target": f"{op} {target}" if op else None,
                      "met": met, "issue_now": before}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", default=None, metavar="URL")
    ap.add_argument("--batch-postgres", action="store_true",
                    help="run the batches on Postgres too (default: SQLite)")
    ap.add_argument("--echo-lines", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--embed-lines", type=int, default=10_000)
    ap.add_argument("--baseline-texts", type=int, default=2000,
                    help="texts encode is timed on (best of three) for the embedding batch")
    ap.add_argument("--debug-embed-lines", type=int, default=20_000)
    ap.add_argument("--embed-jobs", type=int, default=256)
    ap.add_argument("--echo-jobs", type=int, default=200, help="jobs counted per flow")
    ap.add_argument("--samples", type=int, default=200, help="round trips per sampler")
    ap.add_argument("--quick", action="store_true", help="small sizes: check that it runs")
    args = ap.parse_args()
    if args.quick:
        args.echo_lines, args.embed_lines, args.baseline_texts = [500, 1000], 200, 200
        args.debug_embed_lines, args.embed_jobs, args.echo_jobs = 1000, 64, 30
        args.samples = 30

    from bench.batch import measure as minilm_batch
    from bench.debug_embed import measure as debug_embed

    pg = postgres_url(args.postgres)
    batch_pg = pg if args.batch_postgres else None
    started = time.monotonic()
    out: dict = {"bench": "ceiling", "cpus": os.cpu_count(),
                 "load_avg_1m": round(os.getloadavg()[0], 2),
                 "databases": {"batches_and_round_trips": "postgres" if batch_pg else "sqlite",
                               "per_job": "postgres" if pg else "sqlite"}}
    out["batch_echo"] = echo_batches(args.echo_lines, batch_pg)
    out["minilm_batch"] = minilm_batch(lines=args.embed_lines, postgres=batch_pg, native=False,
                                       baseline_texts=args.baseline_texts)
    out["debug_embed"] = debug_embed(lines=args.debug_embed_lines, rate=20_000, batch_ms=0.0,
                                     chunk_lines=64, concurrency=32, postgres=batch_pg)
    out["minilm_jobs"] = minilm_jobs(args.embed_jobs, batch_pg)
    out["per_job"] = per_job(pg, args.echo_jobs)
    out["round_trips"] = round_trips(batch_pg, args.samples)
    out["table"] = table(out)
    out["seconds"] = round(time.monotonic() - started, 1)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
