"""A throwaway local stack for benchmarks: a private redis-server, a SQLite file (or a
fresh Postgres database with --postgres), the API and workers as subprocesses."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from common.keys import create_api_key
from common.migrate import upgrade
from common.settings import Settings
from monkey.embedded import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parent.parent


class BenchStack:
    def __init__(self, *, postgres_url: str | None = None, env: dict | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="monkey-bench-"))
        self.redis = EmbeddedRedis(self.tmp / "redis").start()
        self._pg_admin = postgres_url
        self._pg_name = None
        if postgres_url:
            import psycopg

            self._pg_name = f"monkey_bench_{secrets.token_hex(4)}"
            with psycopg.connect(postgres_url, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{self._pg_name}"')
            self.db_url = postgres_url.rsplit("/", 1)[0] + f"/{self._pg_name}"
        else:
            self.db_url = f"sqlite:///{self.tmp / 'bench.db'}"
        self.env = {**os.environ, "DATABASE_URL": self.db_url, "REDIS_URL": self.redis.url,
                    "MONKEY_DATA_DIR": str(self.tmp), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.settings = Settings(DATABASE_URL=self.db_url, REDIS_URL=self.redis.url)
        upgrade(self.settings)
        self.key = asyncio.run(create_api_key(self.settings, "bench"))
        self.procs: list[subprocess.Popen] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen([sys.executable, "-m", "monkey.cli", "--log-level", "WARNING",
                                 *args], cwd=REPO, env={**self.env, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_api(self) -> None:
        self.port = free_port()
        proc = self.spawn("api", ["api", "--port", str(self.port)])
        _wait(lambda: _ok(f"{self.url}/readyz"), 60, "API", proc)

    def start_worker(self, queues: str, concurrency: int, env: dict | None = None):
        proc = self.spawn(f"worker-{queues}", ["worker", "--queues", queues, "--concurrency",
                                               str(concurrency)], env)
        r = redis.Redis.from_url(self.redis.url)

        def ready() -> bool:
            for key in r.scan_iter(match="monkey:worker:*"):
                info = r.hgetall(key)
                if info.get(b"pid") == str(proc.pid).encode() and info.get(b"ready") == b"1":
                    return True
            return False

        _wait(ready, 300, f"{queues} worker", proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.redis.stop()
        if self._pg_name:
            import psycopg

            with psycopg.connect(self._pg_admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check, timeout: float, what: str, proc) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout}s")
        time.sleep(0.1)


def percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    if not s:
        return {}

    def pick(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))], 3)

    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "mean_ms": round(sum(s) / len(s), 3),
            "n": len(s)}


def run_on_scratch_postgres(name: str, main) -> None:
    """The entry of an in-process bench on a scratch Postgres database and a private
    Redis: parses --jobs and --postgres, then prints `asyncio.run(main(args, settings))`
    as JSON; the database is dropped afterwards."""
    import psycopg  # Postgres benches only

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--postgres", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    server = EmbeddedRedis(tmp / "redis").start()
    db = f"monkey_bench_{os.getpid()}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    db_url = args.postgres.rsplit("/", 1)[0] + f"/{db}"
    try:
        settings = Settings(DATABASE_URL=db_url, REDIS_URL=server.url, MONKEY_DATA_DIR=str(tmp))
        upgrade(settings)
        print(json.dumps(asyncio.run(main(args, settings)), indent=2))
    finally:
        server.stop()
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
