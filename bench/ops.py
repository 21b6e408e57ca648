"""What the operators' history and the jobs search cost on a big jobs table (JSON out).

N jobs (50,000 by default) over 5 keys in a fresh Postgres database, most finished
over the last two hours and a fifth queued; a private redis-server. Measures:

- one sample of the control process's history (`take_sample`: GET /v1/queues's
  figures and the finished count per queue), and reading an hour of samples back;
- GET /v1/jobs?q= for one key: a word in 1% of its prompts, a word in none (the
  whole window read), and "prompt" (in every row's JSON text, in no value).

    python bench/ops.py [--jobs 50000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import insert  # noqa: E402

from api.deps import Principal  # noqa: E402
from api.services.jobs import list_jobs  # noqa: E402
from api.services.ops_history import read_history, store_sample, take_sample  # noqa: E402
from api.state import close_state, open_state  # noqa: E402
from bench.stack import run_on_scratch_postgres  # noqa: E402
from common.db import ApiKey, Job, utcnow  # noqa: E402
from common.ids import new_id  # noqa: E402
from common.producer import StubProducer  # noqa: E402
from common.settings import Settings  # noqa: E402

KEYS = [f"key_bench{i}" for i in range(5)]


async def fill(state, n: int) -> None:
    now = utcnow()
    async with state.sessions() as s:
        s.add_all([ApiKey(id=k, name=k, key_hash=k, prefix="mk-") for k in KEYS])
        await s.commit()
    for start in range(0, n, 5000):
        rows = []
        for i in range(start, min(n, start + 5000)):
            done = i % 5 != 0
            created = now - timedelta(seconds=7200 * (1 - i / n))
            prompt = f"write function number {i}" + (" with fibonacci" if i % 100 == 5 else "")
            rows.append({"id": new_id("job"), "owner_id": KEYS[i % len(KEYS)],
                         "kind": "generate", "model": "debug/echo",
                         "queue": "llm" if i % 3 else "gpu",
                         "status": "succeeded" if done else "queued",
                         "priority": "batch" if i % 2 else "interactive",
                         "input": {"prompt": prompt}, "params": {}, "created_at": created,
                         "finished_at": created + timedelta(seconds=2) if done else None})
        async with state.sessions() as s:
            await s.execute(insert(Job), rows)
            await s.commit()


async def timed(fn, runs: int = 10) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = await fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2), out


async def main(args: argparse.Namespace, settings: Settings) -> dict:
    state = open_state(settings, producer=StubProducer())
    try:
        t0 = time.perf_counter()
        await fill(state, args.jobs)
        out: dict = {"jobs": args.jobs, "keys": len(KEYS),
                     "fill_s": round(time.perf_counter() - t0, 1)}
        now = time.time()
        ms, sample = await timed(lambda: take_sample(sessions=state.sessions,
                                                     redis=state.redis, since=now - 10, now=now))
        out["sample_ms_median"] = ms
        out["finished_in_10_s"] = {q["queue"]: q["finished"] for q in sample["queues"]}
        for i in range(360):  # an hour at the default 10 s
            await store_sample(state.redis, {**sample, "at": now - 3590 + i * 10})
        ms, hour = await timed(lambda: read_history(state.redis))
        out["read_hour_ms_median"] = ms
        out["hour_samples"] = len(hour)
        out["hour_json_bytes"] = len(json.dumps(hour))

        principal = Principal(key_id=KEYS[0], name="bench")

        async def search(q: str) -> int:
            async with state.sessions() as s:
                page = await list_jobs(session=s, principal=principal, status=None, kind=None,
                                       limit=20, after=None, q=q)
            return len(page["data"])

        for q in ("fibonacci", "nowhere-at-all", "prompt"):
            ms, found = await timed(lambda q=q: search(q))
            out[f"search_{q}"] = {"ms_median": ms, "found": found}
        return out
    finally:
        await close_state(state)


def run() -> None:
    run_on_scratch_postgres("ops", main)


if __name__ == "__main__":
    run()
