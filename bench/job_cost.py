"""What one interactive echo job costs the broker and the database (JSON out): Redis
commands (INFO commandstats, by command) and Postgres transactions (pg_stat_database
xact_commit + xact_rollback) per job, with the idle traffic of as long a quiet spell
subtracted.

A job is a zero-delay `debug/echo` job submitted with POST /v1/jobs, run by one llm
worker, and read back to its `done`: over GET /v1/jobs/{id}/events (the documented
flow, `post_then_events`), or in the submit's own answer (`Accept: text/event-stream`,
`one_request`). The jobs run one after another, as one client's would.

Postgres reports a backend's transactions up to ten seconds late (a backend that
goes idle flushes its statistics at most once a second, else after PGSTAT_IDLE_INTERVAL,
10 s), so every reading waits SETTLE_S after the last activity it must include; the
quiet spell is measured over the same length of time as the jobs' window.

    python bench/job_cost.py [--jobs 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETTLE_S = 11.0
FLOWS = ("post_then_events", "one_request")


def redis_calls(client) -> Counter[str]:
    """Calls so far of every Redis command, by name (INFO commandstats)."""
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in client.info("commandstats").items()})


def pg_transactions(admin_url: str, database: str) -> int:
    """Committed and rolled back transactions so far in `database` (as far as its
    backends have reported them)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = %s", (database,)).fetchone()
    return int(row[0]) if row else 0


def echo_job(client: httpx.Client, flow: str, i: int) -> None:
    """One zero-delay echo job, from its submit until its `done` arrived."""
    body = {"model": "debug/echo", "input": {"prompt": f"ping {i}"}}
    if flow == "one_request":
        stream = client.stream("POST", "/v1/jobs", json=body,
                               headers={"Accept": "text/event-stream"})
    else:
        posted = client.post("/v1/jobs", json=body)
        posted.raise_for_status()
        stream = client.stream("GET", f"/v1/jobs/{posted.json()['id']}/events")
    with stream as resp:
        resp.raise_for_status()
        if not any(line == "event: done" for line in resp.iter_lines()):
            raise RuntimeError(f"job {i}: the event stream ended without done")


@dataclass
class Reading:
    at: float
    redis: Counter[str]
    pg: int | None


class CostMeter:
    """Readings of one stack's Redis database and Postgres database."""

    def __init__(self, redis_client, pg: tuple[str, str] | None, settle_s: float = SETTLE_S):
        self.redis = redis_client
        self.pg = pg  # (admin URL, database name), or None on SQLite
        self.settle_s = settle_s

    def read(self) -> Reading:
        pg = pg_transactions(*self.pg) if self.pg else None
        return Reading(time.monotonic(), redis_calls(self.redis), pg)

    def per_job(self, run: Callable[[], None], jobs: int) -> dict:
        """Run `run` (which does `jobs` jobs), then stay idle as long; per job, the
        Redis commands (in all and by command) and Postgres transactions of the first
        window less those of the second."""
        time.sleep(self.settle_s)  # what came before is reported
        start = self.read()
        t0 = time.monotonic()
        run()
        busy_s = time.monotonic() - t0
        time.sleep(self.settle_s)
        busy = self.read()
        time.sleep(busy.at - start.at)  # a quiet spell of the same length
        idle = self.read()
        span = (busy.at - start.at) / (idle.at - busy.at)
        totals = {
            name: busy.redis[name] - start.redis[name]
            - (idle.redis[name] - busy.redis[name]) * span
            for name in set(busy.redis) | set(start.redis)}
        # INFO itself is the meter's, not the job's: one per reading in each window.
        totals.pop("info", None)
        redis_total = sum(totals.values())
        by_command = {name: round(n / jobs, 2) for name, n in totals.items()}
        out = {
            "jobs": jobs, "jobs_s": round(busy_s, 3),
            "redis_commands": round(redis_total, 1),
            "redis_commands_per_job": round(redis_total / jobs, 2),
            "redis_by_command": {k: v for k, v in sorted(by_command.items(),
                                                         key=lambda kv: -kv[1]) if v >= 0.05},
        }
        if start.pg is not None and busy.pg is not None and idle.pg is not None:
            # (The meter reads pg_stat_database from the admin URL's database.)
            pg_total = busy.pg - start.pg - (idle.pg - busy.pg) * span
            out["pg_transactions"] = round(pg_total, 1)
            out["pg_transactions_per_job"] = round(pg_total / jobs, 2)
        return out


def measure(stack, *, jobs: int, flows: tuple[str, ...] = FLOWS, warmup: int = 20) -> dict:
    """Per-job costs of each flow on a started BenchStack (API and one llm worker)."""
    import redis

    meter = CostMeter(redis.Redis.from_url(stack.redis.url),
                      (stack._pg_admin, stack._pg_name) if stack._pg_name else None)
    out: dict = {}
    with httpx.Client(base_url=stack.url, timeout=30,
                      headers={"Authorization": f"Bearer {stack.key}"}) as client:
        for flow in flows:
            for i in range(warmup):
                echo_job(client, flow, i)

            def run(flow: str = flow) -> None:
                for i in range(jobs):
                    echo_job(client, flow, i)

            out[flow] = meter.per_job(run, jobs)
    return out


def main() -> None:
    from bench.stack import BenchStack

    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    pg = os.environ.get("DATABASE_URL", "")
    ap.add_argument("--postgres", default=pg if pg.startswith("postgres") else None,
                    metavar="URL", help="admin URL of a Postgres (default: SQLite, Redis only)")
    ap.add_argument("--concurrency", type=int, default=32, help="task threads of the worker")
    args = ap.parse_args()
    stack = BenchStack(postgres_url=args.postgres)
    try:
        stack.start_api()
        stack.start_worker("llm", args.concurrency)
        out = {"bench": "job_cost", "database": "postgres" if args.postgres else "sqlite",
               **measure(stack, jobs=args.jobs)}
    finally:
        stack.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
