"""What looking for lost task messages costs the reconciler with a deep backlog (JSON out).

N queued jobs (a 50,000-line batch by default) in Postgres, marked published, their
messages on Redis as the API writes them; no worker. Measures, on a private
redis-server and a fresh database:

- the census each tick runs (LLENs and HLEN in one round trip, one COUNT);
- a whole reconciler tick with no sweep running;
- a full sweep: slices per tick, milliseconds per slice, Redis commands;
- finding 10 messages deleted from the middle of the backlog.

    python bench/recovery.py [--jobs 50000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import insert, select  # noqa: E402

from api.reconciler import Reconciler  # noqa: E402
from api.recovery import LostMessages  # noqa: E402
from api.state import close_state, open_state  # noqa: E402
from bench.stack import run_on_scratch_postgres  # noqa: E402
from common.constants import BROKER_EPOCH  # noqa: E402
from common.db import Job, utcnow  # noqa: E402
from common.ids import new_id  # noqa: E402
from common.producer import StubProducer, TaskMessage  # noqa: E402
from common.producer.wire import TaskWire  # noqa: E402
from common.settings import Settings  # noqa: E402


def ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


async def commands(state) -> int:
    return int((await state.redis.info("stats"))["total_commands_processed"])


async def fill(state, n: int) -> list[str]:
    wire, published = TaskWire(), utcnow() - timedelta(seconds=60)
    ids = []
    for start in range(0, n, 5000):
        rows = [{"id": new_id("job"), "owner_id": "key_bench", "kind": "generate",
                 "model": "debug/echo", "queue": "llm", "status": "queued",
                 "priority": "batch", "input": {"prompt": "hi"}, "params": {},
                 "created_at": published, "published_at": published}
                for _ in range(min(5000, n - start))]
        async with state.sessions() as s:
            await s.execute(insert(Job), rows)
            await s.commit()
        pipe = state.redis.pipeline(transaction=False)
        for row in rows:
            _cmd, key, payload = wire.publish_commands(TaskMessage.of_row(row))[0]
            pipe.lpush(key, payload)
        await pipe.execute()
        ids += [r["id"] for r in rows]
    return ids


async def sweep(lost: LostMessages, state) -> dict:
    lost.start_sweep()
    per_tick, c0, t0 = [], await commands(state), time.perf_counter()
    unmarked = 0
    while lost.sweep is not None:
        t = time.perf_counter()
        unmarked += await lost.tick()
        per_tick.append(ms(t))
    return {"total_ms": ms(t0), "ticks": len(per_tick),
            "tick_ms_median": round(statistics.median(per_tick), 2),
            "tick_ms_max": max(per_tick), "last_tick_ms": per_tick[-1],
            "redis_commands": await commands(state) - c0 - 1, "unmarked": unmarked,
            **{k: v for k, v in lost.last.items() if k in ("read", "queued", "missing")}}


async def main(args: argparse.Namespace, settings: Settings) -> dict:
    state = open_state(settings, producer=StubProducer())
    try:
        t0 = time.perf_counter()
        ids = await fill(state, args.jobs)
        out: dict = {"jobs": args.jobs, "fill_s": round(ms(t0) / 1000, 1),
                     "redis_used_mb": round(
                         (await state.redis.info("memory"))["used_memory"] / 2**20, 1)}
        await state.redis.set(BROKER_EPOCH, "bench")
        lost = LostMessages(state)

        times, c0 = [], await commands(state)
        for _ in range(20):
            t = time.perf_counter()
            short = await lost.census()
            times.append(ms(t))
        out["census"] = {"ms_median": statistics.median(times), "ms_max": max(times),
                         "redis_commands": (await commands(state) - c0 - 1) / 20,
                         "short": short}

        reconciler = Reconciler(state)
        times = []
        for _ in range(10):
            t = time.perf_counter()
            counts = await reconciler.tick()
            times.append(ms(t))
        out["reconciler_tick_no_sweep"] = {"ms_median": statistics.median(times),
                                           "ms_max": max(times), "counts": counts}

        out["full_sweep"] = await sweep(lost, state)

        # Lose 10 messages from the middle of the backlog: the census is short, a sweep
        # finds exactly those.
        victims = set(ids[len(ids) // 2: len(ids) // 2 + 10])
        raws = await state.redis.lrange("llm\x06\x169", 0, -1)
        for raw in raws:
            if any(v.encode() in raw for v in victims):
                await state.redis.lrem("llm\x06\x169", 1, raw)
        out["after_losing_10"] = {"census_short": await lost.census(),
                                  **await sweep(lost, state)}
        async with state.sessions() as s:
            unmarked = set((await s.execute(select(Job.id).where(
                Job.published_at.is_(None)))).scalars())
        out["after_losing_10"]["found_exactly_those"] = unmarked == victims
        await reconciler.stop()
        return out
    finally:
        await close_state(state)


def run() -> None:
    run_on_scratch_postgres("recovery", main)


if __name__ == "__main__":
    run()
