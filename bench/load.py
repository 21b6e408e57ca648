"""Load: 1,000 debug/echo jobs followed by 50 SSE clients at once (JSON on stdout).

Starts its own stack (BenchStack: a private redis-server, SQLite or a fresh Postgres
database with --postgres, the API and one llm worker as subprocesses). Each client takes
its share of the jobs one after another, as a UI does: POST /v1/jobs, then
GET /v1/jobs/{id}/events until `done`. So 50 streams are open, and 50 jobs streaming
their words (delay_ms apart), most of the time.

Printed: the API's latency for submits and, per job, from opening its stream to `done`
and from the submit to `done` (p50/p99); jobs whose client never got its `done` (misses,
which must be 0); 429s, counted apart (the limits are set high here, but still run);
the API process's peak RSS (VmHWM, and VmRSS sampled); the llm worker's completed jobs/s
over the window it ran them; the CPU seconds of the API, the worker and the clients
themselves, and the machine's load average (all share its cores).

    python bench/load.py [--jobs 1000] [--clients 50] [--delay-ms 10] [--words 6]
                         [--worker-concurrency 64] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import create_engine, func, select

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.stack import BenchStack, percentiles  # noqa: E402
from common.db import Job  # noqa: E402

# High enough that 50 clients never meet them, but on: their cost (a Redis token
# bucket per request, a stream count per key) is part of what is measured.
LIMITS_ENV = {
    "MONKEY_RATE_LIMIT_PER_S": "100000",
    "MONKEY_RATE_LIMIT_BURST": "100000",
    "MONKEY_MAX_QUEUED_PER_KEY": "100000",
    "MONKEY_MAX_STREAMS_PER_KEY": "1000",
}
STREAM_TIMEOUT_S = 120


@dataclass
class Tally:
    submit_ms: list[float] = field(default_factory=list)
    stream_to_done_ms: list[float] = field(default_factory=list)
    submit_to_done_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    misses: list[dict] = field(default_factory=list)
    rate_limited: int = 0
    submit_errors: int = 0


async def follow(c: httpx.AsyncClient, job_id: str, t_submit: float, tally: Tally) -> None:
    """Read the job's events until `done`; anything else is a miss."""
    t0 = time.perf_counter()
    tokens, event = 0, None
    try:
        async with c.stream("GET", f"/v1/jobs/{job_id}/events",
                            timeout=httpx.Timeout(10, read=STREAM_TIMEOUT_S)) as resp:
            if resp.status_code == 429:
                tally.rate_limited += 1
            if resp.status_code != 200:
                tally.misses.append({"job": job_id, "status": resp.status_code})
                return
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    tokens += event == "token"
                elif line.startswith("data: ") and event == "done":
                    now = time.perf_counter()
                    tally.stream_to_done_ms.append((now - t0) * 1000)
                    tally.submit_to_done_ms.append((now - t_submit) * 1000)
                    tally.tokens.append(tokens)
                    return
    except httpx.HTTPError as exc:
        tally.misses.append({"job": job_id, "error": type(exc).__name__})
        return
    tally.misses.append({"job": job_id, "error": "stream ended without done"})


async def client(c: httpx.AsyncClient, jobs: range, args, tally: Tally) -> None:
    prompt = " ".join(["word"] * (args.words - 1))
    for i in jobs:
        body = {"model": "debug/echo", "input": {"prompt": f"{prompt} {i}"},
                "params": {"delay_ms": args.delay_ms}}
        while True:
            t0 = time.perf_counter()
            resp = await c.post("/v1/jobs", json=body)
            if resp.status_code != 429:
                break
            tally.rate_limited += 1
            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
        if resp.status_code != 202:
            tally.submit_errors += 1
            continue
        tally.submit_ms.append((time.perf_counter() - t0) * 1000)
        await follow(c, resp.json()["id"], t0, tally)


async def run_clients(stack: BenchStack, args) -> tuple[Tally, float]:
    tally = Tally()
    shares = [range(k, args.jobs, args.clients) for k in range(args.clients)]
    limits = httpx.Limits(max_connections=args.clients * 2,
                          max_keepalive_connections=args.clients * 2)
    async with httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {stack.key}"}) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, share, args, tally) for share in shares))
        return tally, time.perf_counter() - t0


class ProcWatch:
    """Peak RSS of a process: the kernel's high-water mark (VmHWM), and VmRSS sampled
    every 50 ms as a check; CPU seconds from /proc/<pid>/stat."""

    def __init__(self, pid: int):
        self.pid = pid
        self.sampled_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def status_kb(self, field_name: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        raise KeyError(field_name)

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.sampled_peak_kb = max(self.sampled_peak_kb, self.status_kb("VmRSS"))

    def __enter__(self) -> ProcWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker_window(stack: BenchStack) -> dict:
    """The llm worker's pace from the jobs' own times: from the first start to the last
    finish of the bench's jobs."""
    engine = create_engine(stack.settings.sync_database_url)
    try:
        with engine.connect() as conn:
            first, last, n = conn.execute(
                select(func.min(Job.started_at), func.max(Job.finished_at), func.count())
                .where(Job.status == "succeeded")).one()
            statuses = dict(conn.execute(
                select(Job.status, func.count()).group_by(Job.status)).all())
    finally:
        engine.dispose()
    span = (_dt(last) - _dt(first)).total_seconds() if n else 0
    return {"succeeded": n, "statuses": statuses, "window_s": round(span, 2),
            "completed_jobs_per_s": round(n / span, 1) if span else None}


def _dt(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--delay-ms", type=float, default=10, help="debug/echo's wait per word")
    ap.add_argument("--words", type=int, default=6, help="words (tokens) per job")
    ap.add_argument("--worker-concurrency", type=int, default=64)
    pg = os.environ.get("DATABASE_URL", "")
    ap.add_argument("--postgres", default=pg if pg.startswith("postgres") else None,
                    help="admin URL of a Postgres to make a bench database in (default: SQLite)")
    args = ap.parse_args()

    load_before = os.getloadavg()
    stack = BenchStack(postgres_url=args.postgres, env=LIMITS_ENV)
    try:
        stack.start_api()
        api = ProcWatch(stack.procs[-1].pid)
        worker = ProcWatch(stack.start_worker("llm", concurrency=args.worker_concurrency).pid)
        idle_kb = api.status_kb("VmRSS")
        cpu0 = api.cpu_s(), worker.cpu_s(), time.process_time()
        with api:
            tally, wall_s = asyncio.run(run_clients(stack, args))
        cpu_s = {"api": api.cpu_s() - cpu0[0], "llm_worker": worker.cpu_s() - cpu0[1],
                 "bench_clients": time.process_time() - cpu0[2]}
        api_peak_kb = api.status_kb("VmHWM")
        worker_peak_kb = worker.status_kb("VmHWM")
        pace = worker_window(stack)
    finally:
        stack.close()
    done = len(tally.stream_to_done_ms)
    out = {
        "bench": "load",
        "database": "postgres" if args.postgres else "sqlite",
        "jobs": args.jobs, "clients": args.clients, "words_per_job": args.words,
        "delay_ms": args.delay_ms, "worker_concurrency": args.worker_concurrency,
        "submit_latency": percentiles(tally.submit_ms),
        "sse_stream_open_to_done": percentiles(tally.stream_to_done_ms),
        "submit_to_done": percentiles(tally.submit_to_done_ms),
        "done_received": done,
        "misses": len(tally.misses),
        "miss_examples": tally.misses[:5],
        "tokens_per_job_mean": round(sum(tally.tokens) / done, 2) if done else None,
        "rate_limited_429": tally.rate_limited,
        "submit_errors": tally.submit_errors,
        "wall_s": round(wall_s, 2),
        "jobs_per_s_end_to_end": round(done / wall_s, 1),
        "llm_worker": pace,
        "api_rss_mb": {"idle_before": mb(idle_kb), "peak_vmhwm": mb(api_peak_kb),
                       "peak_sampled": mb(api.sampled_peak_kb)},
        # Where the machine's CPU went during the run (wall_s of it per core).
        "cpu_s": {k: round(v, 1) for k, v in cpu_s.items()},
        "llm_worker_peak_rss_mb": mb(worker_peak_kb),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(out, indent=2))
    if tally.misses or tally.submit_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
