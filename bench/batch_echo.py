"""Batch API lines of `debug/echo` (a model that costs nothing): what the batch machinery
itself costs per line (JSON out).

Starts its own stack (bench/stack.py: a private redis-server, SQLite or a fresh Postgres
database, the API and one llm worker), then drives it with the official `openai` SDK:
files.create, batches.create, batches.retrieve until `completed`. Reports create ->
completed lines/s, and per line the Redis commands (INFO commandstats, before and after
the batch, with the idle traffic of as long a quiet spell subtracted) and, on
Postgres, the transactions (pg_stat_database xact_commit + xact_rollback, idle
subtracted the same way).

    python bench/batch_echo.py [--lines 5000] [--concurrency 32] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.stack import BenchStack  # noqa: E402


def batch_file(n: int) -> bytes:
    return b"".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "debug/echo",
                 "messages": [{"role": "user", "content": f"line {i} says hello"}]},
    }).encode() + b"\n" for i in range(n))


def redis_commands(r) -> int:
    return sum(v["calls"] for k, v in r.info("commandstats").items())


def pg_xacts(stack) -> int | None:
    if not stack._pg_name:
        return None
    import psycopg

    with psycopg.connect(stack._pg_admin, autocommit=True) as c:
        # The stats of other sessions reach the view within its snapshot interval.
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = %s", (stack._pg_name,)).fetchone()
    return int(row[0])


def counters(stack, r) -> tuple[int, int | None]:
    return redis_commands(r), pg_xacts(stack)


def run_batch(client, data: bytes, poll_s: float = 0.1, endpoint: str = "/v1/chat/completions"):
    f = client.files.create(file=("bench.jsonl", data), purpose="batch")
    t0 = time.perf_counter()
    batch = client.batches.create(input_file_id=f.id, endpoint=endpoint,
                                  completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(poll_s)
        batch = client.batches.retrieve(batch.id)
    elapsed = time.perf_counter() - t0
    if batch.status != "completed":
        raise RuntimeError(f"batch ended {batch.status}: {batch.errors}")
    return elapsed, batch


def phases(stack, batch_id: str) -> dict:
    """Seconds from the batch's creation to each step: validated, first line started,
    last line finished, finalizing, completed (from the database)."""
    from sqlalchemy import create_engine, func, select

    from common.batches_db import Batch
    from common.db import Job

    engine = create_engine(stack.settings.sync_database_url)
    try:
        with engine.connect() as c:
            b = c.execute(select(Batch).where(Batch.id == batch_id)).one()
            first, last, enqueued = c.execute(
                select(func.min(Job.started_at), func.max(Job.finished_at),
                       func.max(Job.created_at)).where(Job.batch_id == batch_id)).one()
    finally:
        engine.dispose()

    def since(t) -> float | None:
        if t is None:
            return None
        if isinstance(t, str):
            from datetime import datetime
            t = datetime.fromisoformat(t)
        return round((t.replace(tzinfo=None) - b.created_at.replace(tzinfo=None))
                     .total_seconds(), 3)

    return {"in_progress": since(b.in_progress_at), "last_line_enqueued": since(enqueued),
            "first_line_started": since(first),
            "last_line_finished": since(last), "finalizing": since(b.finalizing_at),
            "completed": since(b.completed_at)}


def measure(stack, client, r, lines: int) -> dict:
    """One batch of `lines` echo lines on a started stack (API and one llm worker):
    create -> completed, phases, and per line the Redis commands and, on Postgres,
    the transactions, with as long a quiet spell's traffic subtracted."""
    data = batch_file(lines)
    before = counters(stack, r)
    elapsed, batch = run_batch(client, data)
    after = counters(stack, r)
    # The same span of idle traffic (heartbeats, reconciler, the polls themselves
    # are part of using it, so they stay in).
    time.sleep(min(elapsed, 10))
    idle_end = counters(stack, r)
    idle_scale = elapsed / min(elapsed, 10)
    redis_idle = (idle_end[0] - after[0]) * idle_scale
    out = {
        "lines": lines,
        "create_to_completed_s": round(elapsed, 3),
        "lines_per_s": round(lines / elapsed, 1),
        "request_counts": batch.request_counts.model_dump(),
        "phases_s": phases(stack, batch.id),
        "redis_commands_per_line": round((after[0] - before[0] - redis_idle) / lines, 2),
    }
    if after[1] is not None and before[1] is not None and idle_end[1] is not None:
        pg_idle = (idle_end[1] - after[1]) * idle_scale
        out["pg_transactions_per_line"] = round((after[1] - before[1] - pg_idle) / lines, 3)
    return out


def open_client(stack):
    import openai

    return openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0,
                         timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32, help="task threads of the worker")
    ap.add_argument("--postgres", default=None, metavar="URL")
    args = ap.parse_args()

    import redis

    stack = BenchStack(postgres_url=args.postgres)
    try:
        stack.start_api()
        stack.start_worker("llm", args.concurrency)
        r = redis.Redis.from_url(stack.redis.url)
        client = open_client(stack)
        run_batch(client, batch_file(100))  # warm-up
        time.sleep(2)  # the warm-up's finalize and stream expiries settle
        out = {"bench": "batch_echo", "database": "postgres" if args.postgres else "sqlite",
               "worker_threads": args.concurrency, **measure(stack, client, r, args.lines)}
    finally:
        stack.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
