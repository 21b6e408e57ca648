"""Queue overhead, side by side in one run (JSON on stdout):

- raw Redis: LPUSH a request, a consumer BRPOPs it and LPUSHes a reply, BRPOP the reply;
- bare Celery: a no-op task's delay().get() through a solo worker on the same Redis;
- Monkey Coder: a zero-delay debug/echo job, from POST /v1/jobs until `done` over SSE:
  POST, then GET /v1/jobs/{id}/events (the documented flow), and in one request (the
  submit answers with the event stream: Accept: text/event-stream);
  the four round trips interleaved sample by sample (see side_by_side);
- submit throughput (jobs/s accepted) and completed jobs/s with one llm worker, under
  the default request limit (100/s, a burst of 500): a 429 waits its Retry-After and
  is sent again, as a script would, and the 429s are counted apart.

    python bench/overhead.py [--samples 200] [--jobs 1000] [--postgres URL] [--sequential]
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


class RawRedis:
    """LPUSH a request; a consumer thread BRPOPs it and LPUSHes a reply; BRPOP the reply."""

    def __init__(self, url: str):
        self.producer, consumer = redis.Redis.from_url(url), redis.Redis.from_url(url)
        self._stop = threading.Event()

        def serve() -> None:
            while not self._stop.is_set():
                got = consumer.brpop(["bench:req"], timeout=1)
                if got:
                    consumer.lpush("bench:resp", got[1])

        threading.Thread(target=serve, daemon=True).start()

    def one(self, i: int) -> bool:
        self.producer.lpush("bench:req", i)
        return self.producer.brpop(["bench:resp"], timeout=5) is not None

    def close(self) -> None:
        self._stop.set()


class BareCelery:
    """A no-op task's delay().get() through a solo Celery worker on the same Redis."""

    def __init__(self, url: str):
        env = {**os.environ, "BENCH_REDIS_URL": url}
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-P", "solo",
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.environ["BENCH_REDIS_URL"] = url
        from bench.noop_app import noop

        self.noop = noop
        noop.delay().get(timeout=60)  # the worker is up

    def one(self, i: int) -> bool:
        self.noop.delay().get(timeout=10)
        return True

    def close(self) -> None:
        self.worker.terminate()
        self.worker.wait(10)


class EchoJob:
    """Submit a zero-delay echo job and read its events until `done`: in one request
    (POST with Accept: text/event-stream) or in two (POST, then GET .../events)."""

    def __init__(self, stack: BenchStack, *, one_request: bool):
        self.client = httpx.Client(base_url=stack.url, timeout=30,
                                   headers={"Authorization": f"Bearer {stack.key}"})
        self.one_request = one_request

    def one(self, i: int) -> bool:
        body = {"model": "debug/echo", "input": {"prompt": f"ping {i}"}}
        if self.one_request:
            stream = self.client.stream("POST", "/v1/jobs", json=body,
                                        headers={"Accept": "text/event-stream"})
        else:
            job = self.client.post("/v1/jobs", json=body).json()
            stream = self.client.stream("GET", f"/v1/jobs/{job['id']}/events")
        with stream as resp:
            return any(line == "event: done" for line in resp.iter_lines())

    def close(self) -> None:
        self.client.close()


def side_by_side(samplers: dict, n: int, warmup: int = 20, sequential: bool = False) -> dict:
    """Round trips of every sampler. Interleaved by default: sample i of each runs next
    to sample i of the others (in a rotating order), so a change in the machine's load
    during the run weighs on all of them alike. `sequential` runs each sampler's
    samples back to back instead (warm caches favour the smaller loops)."""
    names = list(samplers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)

    def sample(name: str, i: int) -> None:
        t0 = time.perf_counter()
        ok = samplers[name].one(i)
        ms = (time.perf_counter() - t0) * 1000
        if not ok:
            errors[name] += 1
        elif i >= warmup:
            samples[name].append(ms)

    if sequential:
        for name in names:
            for i in range(n + warmup):
                sample(name, i)
    else:
        for i in range(n + warmup):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                sample(name, i)
    return {name: {**percentiles(samples[name]), "errors": errors[name]} for name in names}


async def _submit_many(stack: BenchStack, n: int, concurrency: int) -> tuple[float, int, int]:
    """Submit n jobs, `concurrency` at a time, as a script would: a 429 (the API's
    request limit, 100/s by default) waits its Retry-After and tries again. The seconds
    it took, the submits that failed otherwise, and the 429s."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    sem = asyncio.Semaphore(concurrency)
    errors = rate_limited = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=60,
                                 limits=limits) as c:
        async def one(i: int) -> None:
            nonlocal errors, rate_limited
            async with sem:
                while True:
                    r = await c.post("/v1/jobs", json={
                        "model": "debug/echo", "priority": "batch",
                        "input": {"prompt": f"job {i} of {n}"}})
                    if r.status_code != 429:
                        break
                    rate_limited += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                if r.status_code != 202:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, errors, rate_limited


def throughput(stack: BenchStack, n: int) -> dict:
    engine = create_engine(stack.settings.sync_database_url)
    t0 = time.perf_counter()
    submit_s, submit_errors, rate_limited = asyncio.run(_submit_many(stack, n, 32))
    accepted = n - submit_errors
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            counts = dict(conn.execute(
                select(Job.status, func.count()).where(Job.priority == "batch")
                .group_by(Job.status)).all())
            conn.rollback()
            if sum(v for k, v in counts.items() if k not in ("queued", "running")) >= accepted:
                break
            time.sleep(0.05)
    total_s = time.perf_counter() - t0
    engine.dispose()
    return {
        "jobs": n,
        "submit_jobs_per_s": round(n / submit_s, 1),
        "submit_errors": submit_errors,
        "rate_limited_429": rate_limited,
        "completed_jobs_per_s": round(n / total_s, 1),
        "succeeded": counts.get("succeeded", 0),
        "not_succeeded": accepted - counts.get("succeeded", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=1000)
    pg = os.environ.get("DATABASE_URL", "")
    ap.add_argument("--postgres", default=pg if pg.startswith("postgres") else None,
                    help="admin URL of a Postgres to make a bench database in (default: SQLite)")
    ap.add_argument("--sequential", action="store_true",
                    help="each round trip's samples back to back, not interleaved")
    args = ap.parse_args()

    stack = BenchStack(postgres_url=args.postgres)
    try:
        stack.start_api()
        stack.start_worker("llm", concurrency=32)
        trips = round_trips(stack, args.samples, sequential=args.sequential)
        tput = throughput(stack, args.jobs)
    finally:
        stack.close()
    out = {
        "bench": "overhead",
        "database": "postgres" if args.postgres else "sqlite",
        "sampling": "sequential" if args.sequential else "interleaved",
        **trips,
        "throughput_one_llm_worker": tput,
    }
    print(json.dumps(out, indent=2))


def round_trips(stack: BenchStack, samples: int, sequential: bool = False) -> dict:
    """The four round trips side by side on a started stack (API and an llm worker),
    and the echo jobs' p50 over bare Celery's."""
    samplers: dict = {}
    try:
        samplers = {
            "raw_redis_lpush_brpop": RawRedis(stack.redis.url.replace("/0", "/2")),
            "bare_celery_noop": BareCelery(stack.redis.url.replace("/0", "/3")),
            "echo_job_http_to_sse_done": EchoJob(stack, one_request=False),
            "echo_job_one_request": EchoJob(stack, one_request=True),
        }
        trips = side_by_side(samplers, samples, sequential=sequential)
    finally:
        for sampler in samplers.values():
            sampler.close()
    celery_p50 = trips["bare_celery_noop"]["p50_ms"]
    return {
        **trips,
        "echo_p50_over_celery_p50": round(
            trips["echo_job_http_to_sse_done"]["p50_ms"] / celery_p50, 2),
        "echo_one_request_p50_over_celery_p50": round(
            trips["echo_job_one_request"]["p50_ms"] / celery_p50, 2),
    }


if __name__ == "__main__":
    main()
