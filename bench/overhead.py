"""Queue overhead, side by side in one run (JSON on stdout):

- raw Redis: LPUSH a request, a consumer BRPOPs it and LPUSHes a reply, BRPOP the reply;
- bare Celery: a no-op task's delay().get() through a solo worker on the same Redis;
- Monkey Coder: a zero-delay debug/echo job, from POST /v1/jobs until `done` over SSE,
  in one request (the submit answers with the event stream: Accept: text/event-stream)
  and in two (POST, then GET /v1/jobs/{id}/events);
- submit throughput (jobs/s accepted) and completed jobs/s with one llm worker.

    python bench/overhead.py [--samples 200] [--jobs 1000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import redis
from sqlalchemy import create_engine, func, select

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.stack import REPO, BenchStack, percentiles  # noqa: E402
from common.db import Job  # noqa: E402


def raw_redis(url: str, n: int) -> dict:
    producer, consumer = redis.Redis.from_url(url), redis.Redis.from_url(url)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            got = consumer.brpop(["bench:req"], timeout=1)
            if got:
                consumer.lpush("bench:resp", got[1])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    samples = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        producer.lpush("bench:req", i)
        producer.brpop(["bench:resp"], timeout=5)
        if i >= 20:
            samples.append((time.perf_counter() - t0) * 1000)
    stop.set()
    return percentiles(samples)


def bare_celery(url: str, n: int) -> dict:
    env = {**os.environ, "BENCH_REDIS_URL": url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-P", "solo",
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.environ["BENCH_REDIS_URL"] = url
    from bench.noop_app import noop

    try:
        noop.delay().get(timeout=60)  # the worker is up
        samples = []
        for i in range(n + 20):
            t0 = time.perf_counter()
            noop.delay().get(timeout=10)
            if i >= 20:
                samples.append((time.perf_counter() - t0) * 1000)
        return percentiles(samples)
    finally:
        worker.terminate()
        worker.wait(10)


def echo_round_trip(stack: BenchStack, n: int, *, one_request: bool) -> dict:
    """Submit a zero-delay echo job and read its events until `done`: in one request
    (POST with Accept: text/event-stream) or in two (POST, then GET .../events)."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    samples, errors = [], 0
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as c:
        for i in range(n + 20):
            body = {"model": "debug/echo", "input": {"prompt": f"ping {i}"}}
            t0 = time.perf_counter()
            if one_request:
                stream = c.stream("POST", "/v1/jobs", json=body,
                                  headers={"Accept": "text/event-stream"})
            else:
                job = c.post("/v1/jobs", json=body).json()
                stream = c.stream("GET", f"/v1/jobs/{job['id']}/events")
            done = False
            with stream as resp:
                for line in resp.iter_lines():
                    if line == "event: done":
                        done = True
                        break
            if not done:
                errors += 1
            elif i >= 20:
                samples.append((time.perf_counter() - t0) * 1000)
    return {**percentiles(samples), "errors": errors}


async def _submit_many(stack: BenchStack, n: int, concurrency: int) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {stack.key}"}
    sem = asyncio.Semaphore(concurrency)
    errors = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=60,
                                 limits=limits) as c:
        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                r = await c.post("/v1/jobs", json={"model": "debug/echo", "priority": "batch",
                                                   "input": {"prompt": f"job {i} of {n}"}})
                if r.status_code != 202:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, errors


def throughput(stack: BenchStack, n: int) -> dict:
    engine = create_engine(stack.settings.sync_database_url)
    t0 = time.perf_counter()
    submit_s, submit_errors = asyncio.run(_submit_many(stack, n, 32))
    deadline = time.monotonic() + 600
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            counts = dict(conn.execute(
                select(Job.status, func.count()).where(Job.priority == "batch")
                .group_by(Job.status)).all())
            conn.rollback()
            if sum(v for k, v in counts.items() if k not in ("queued", "running")) >= n:
                break
            time.sleep(0.05)
    total_s = time.perf_counter() - t0
    engine.dispose()
    return {
        "jobs": n,
        "submit_jobs_per_s": round(n / submit_s, 1),
        "submit_errors": submit_errors,
        "completed_jobs_per_s": round(n / total_s, 1),
        "succeeded": counts.get("succeeded", 0),
        "not_succeeded": n - counts.get("succeeded", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=1000)
    pg = os.environ.get("DATABASE_URL", "")
    ap.add_argument("--postgres", default=pg if pg.startswith("postgres") else None,
                    help="admin URL of a Postgres to make a bench database in (default: SQLite)")
    args = ap.parse_args()

    stack = BenchStack(postgres_url=args.postgres)
    try:
        stack.start_api()
        stack.start_worker("llm", concurrency=32)
        raw = raw_redis(stack.redis.url.replace("/0", "/2"), args.samples)
        celery = bare_celery(stack.redis.url.replace("/0", "/3"), args.samples)
        echo = echo_round_trip(stack, args.samples, one_request=True)
        echo_two = echo_round_trip(stack, args.samples, one_request=False)
        tput = throughput(stack, args.jobs)
    finally:
        stack.close()
    out = {
        "bench": "overhead",
        "database": "postgres" if args.postgres else "sqlite",
        "raw_redis_lpush_brpop": raw,
        "bare_celery_noop": celery,
        "echo_job_http_to_sse_done": echo,
        "echo_p50_over_celery_p50": round(echo["p50_ms"] / celery["p50_ms"], 2),
        "echo_job_post_then_get_events": echo_two,
        "echo_two_requests_p50_over_celery_p50": round(echo_two["p50_ms"] / celery["p50_ms"], 2),
        "throughput_one_llm_worker": tput,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
