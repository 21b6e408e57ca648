"""What the retention sweep costs (JSON out): a 50,000-line batch past its retention,
swept on SQLite and on Postgres, at the default slice (500 rows) and at the largest
(10,000). Per run: the whole sweep's time, lines per second, how many DELETEs of jobs
it ran and the longest one (what a concurrent writer could wait for a lock).

    python bench/retention.py [--lines 50000] [--postgres URL] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psycopg  # noqa: E402
from sqlalchemy import event, insert  # noqa: E402

from api.retention import Sweeper  # noqa: E402
from api.state import close_state, open_state  # noqa: E402
from common.batches_db import Batch  # noqa: E402
from common.db import Job, utcnow  # noqa: E402
from common.ids import new_id  # noqa: E402
from common.migrate import upgrade  # noqa: E402
from common.producer import StubProducer  # noqa: E402
from common.settings import Settings  # noqa: E402
from monkey.embedded import EmbeddedRedis  # noqa: E402


async def fill(state, lines: int) -> None:
    ended = utcnow() - timedelta(days=40)
    batch = new_id("batch")
    async with state.sessions() as s:
        await s.execute(insert(Batch).values(
            id=batch, owner_id="key_bench", endpoint="/v1/chat/completions",
            input_file_id="file_bench", completion_window="24h", status="completed",
            request_total=lines, request_completed=lines, created_at=ended,
            expires_at=ended + timedelta(days=1), completed_at=ended))
        await s.commit()
    for start in range(0, lines, 5000):
        rows = [{"id": new_id("job"), "owner_id": "key_bench", "kind": "generate",
                 "model": "debug/echo", "queue": "llm", "status": "succeeded",
                 "priority": "batch", "input": {"prompt": "hi"}, "params": {},
                 "output": {"text": "hi", "finish_reason": "stop"}, "created_at": ended,
                 "finished_at": ended, "batch_id": batch, "custom_id": f"l{start + i}"}
                for i in range(min(5000, lines - start))]
        async with state.sessions() as s:
            await s.execute(insert(Job), rows)
            await s.commit()


async def measure(settings: Settings, lines: int) -> dict:
    state = open_state(settings, producer=StubProducer())
    try:
        await fill(state, lines)
        deletes: list[float] = []
        started: dict[int, float] = {}

        @event.listens_for(state.engine.sync_engine, "before_cursor_execute")
        def before(conn, cursor, statement, *args):
            started[id(cursor)] = time.perf_counter()

        @event.listens_for(state.engine.sync_engine, "after_cursor_execute")
        def after(conn, cursor, statement, *args):
            if statement.startswith("DELETE FROM jobs"):
                deletes.append((time.perf_counter() - started.pop(id(cursor))) * 1000)

        sweeper = Sweeper(sessions=state.sessions, redis=state.redis, settings=settings)
        t0 = time.perf_counter()
        counts = await sweeper.sweep()
        total = time.perf_counter() - t0
        return {"slice": settings.sweep_slice, "swept": counts, "total_s": round(total, 2),
                "lines_per_s": round(counts["jobs"] / total),
                "job_deletes": len(deletes),
                "delete_ms_median": round(statistics.median(deletes), 1),
                "delete_ms_max": round(max(deletes), 1)}
    finally:
        await close_state(state)


def run_on(db_url: str, redis_url: str, tmp: Path, lines: int, slice_: int) -> dict:
    settings = Settings(DATABASE_URL=db_url, REDIS_URL=redis_url, MONKEY_DATA_DIR=str(tmp),
                        MONKEY_SWEEP_SLICE=slice_)
    upgrade(settings)
    return asyncio.run(measure(settings, lines))


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--postgres", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    server = EmbeddedRedis(tmp / "redis").start()
    out: dict = {"lines": args.lines, "sqlite": [], "postgres": []}
    try:
        for slice_ in (500, 10_000):
            db = tmp / f"s{slice_}.db"
            out["sqlite"].append(run_on(f"sqlite:///{db}", server.url, tmp, args.lines, slice_))
            if args.no_postgres:
                continue
            name = f"monkey_bench_{os.getpid()}_{slice_}"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                out["postgres"].append(run_on(args.postgres.rsplit("/", 1)[0] + f"/{name}",
                                              server.url, tmp, args.lines, slice_))
            finally:
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        server.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run()
