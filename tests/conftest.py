"""Test fixtures: real Redis, real Postgres (or SQLite), the real API and Celery workers
as subprocesses, exactly as `monkey api` and `monkey worker` run them.

- Redis: REDIS_URL where set, else a private redis-server started for the session.
- Postgres: DATABASE_URL (a postgresql:// URL) where set, else the local default
  postgresql://postgres@127.0.0.1:5432/test when reachable; each stack gets a fresh
  database. Without Postgres the Postgres-only tests skip, unless CI is set: then
  they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import psycopg
import pytest
import redis

from common.keys import create_api_key
from common.migrate import upgrade
from common.settings import Settings
from monkey.embedded import EmbeddedRedis, free_port

CI = bool(os.environ.get("CI"))
REPO = Path(__file__).resolve().parent.parent
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

# Fast leases and reconciler so recovery is observable in seconds.
FAST_ENV = {
    # Tests submit hundreds of jobs in bursts; the limits have tests of their own.
    "MONKEY_RATE_LIMIT_PER_S": "0",
    "MONKEY_LEASE_S": "3",
    "MONKEY_HEARTBEAT_S": "0.5",
    "MONKEY_RECONCILE_S": "0.25",
    "MONKEY_LOST_AFTER_S": "2",
    "MONKEY_LOST_SCAN_S": "10",
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",  # a process that hangs a test leaves its stacks (_log_tail)
}


def need(what: str, reason: str) -> None:
    """Skip for a missing service, or fail when CI must prove it."""
    if CI:
        pytest.fail(f"{what} is required in CI: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


# Redis -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_base(tmp_path_factory) -> Iterator[str]:
    """host:port of the session's Redis."""
    url = os.environ.get("REDIS_URL")
    if url:
        parts = urlsplit(url)
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            pytest.fail(f"REDIS_URL={url} is set but unreachable: {exc}")
        yield parts.netloc
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield f"127.0.0.1:{server.port}"
    server.stop()


_redis_dbs = itertools.cycle(range(1, 16))


def fresh_redis_url(base: str) -> str:
    """A Redis database of its own for one stack, emptied first."""
    url = f"redis://{base}/{next(_redis_dbs)}"
    redis.Redis.from_url(url).flushdb()
    return url


# Databases ---------------------------------------------------------------------------

def postgres_admin_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = DEFAULT_PG
    url = url.replace("postgresql+asyncpg://", "postgresql://").replace(
        "postgresql+psycopg://", "postgresql://")
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return None
    return url


@dataclass
class Database:
    url: str
    drop: callable = None


def make_database(kind: str, tmp: Path) -> Database:
    if kind == "sqlite":
        return Database(f"sqlite:///{tmp / 'monkey.db'}")
    admin = postgres_admin_url()
    if admin is None:
        need("PostgreSQL", f"cannot connect to {os.environ.get('DATABASE_URL') or DEFAULT_PG}")
    name = f"monkey_t_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin)
    url = urlunsplit(parts._replace(path=f"/{name}"))

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return Database(url, drop)


@contextlib.contextmanager
def migrated(kind: str, tmp: Path, redis_url: str, **env: str | int) -> Iterator[Settings]:
    """Settings on a fresh database of `kind` ("sqlite" or "postgres") at the newest
    migration, with `redis_url` and `env`; the database is dropped afterwards."""
    db = make_database(kind, tmp)
    try:
        settings = Settings(DATABASE_URL=db.url, REDIS_URL=redis_url, MONKEY_DATA_DIR=str(tmp),
                            **env)
        upgrade(settings)
        yield settings
    finally:
        if db.drop:
            db.drop()


@contextlib.contextmanager
def job_store(settings: Settings) -> Iterator:
    """A worker's job store (common.store.JobStore) on `settings`, with `sessions` for
    the tests' own reads and writes and `client`, its Redis; closed afterwards."""
    from common.db import make_sync_engine, sync_sessions
    from common.events import EventWriter
    from common.store import JobStore

    engine = make_sync_engine(settings)
    client = redis.Redis.from_url(settings.redis_url)
    events = EventWriter(client, maxlen=1000, ttl_s=60)
    store = JobStore(engine=engine, events=events, settings=settings)
    store.sessions = sync_sessions(engine)  # type: ignore[attr-defined]
    store.client = client  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        events.close()
        store.close()
        client.close()
        engine.dispose()


@contextlib.contextmanager
def worker_on(settings: Settings, queues: tuple[str, ...] = ("llm",)) -> Iterator:
    """An in-process worker (workers.worker.Worker) on `settings`, with an API key of
    owner "owner" made first; closed afterwards."""
    from workers.worker import Worker  # the worker's imports only where a test needs them

    asyncio.run(create_api_key(settings, "owner"))
    worker = Worker(settings, queues=list(queues))
    try:
        yield worker
    finally:
        worker.close()


# The stack ----------------------------------------------------------------------------

@dataclass
class Stack:
    """An API process and worker processes on one database and one Redis database."""

    db: Database
    redis_url: str
    tmp: Path
    env: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)
    api_port: int = 0
    api_host: str = "127.0.0.1"
    key: str = ""
    _clients: list = field(default_factory=list)
    _default: httpx.Client | None = None

    @property
    def settings(self) -> Settings:
        return Settings(DATABASE_URL=self.db.url, REDIS_URL=self.redis_url,
                        MONKEY_DATA_DIR=str(self.tmp))

    def process_env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(FAST_ENV)
        env.update(self.env)
        env.update(DATABASE_URL=self.db.url, REDIS_URL=self.redis_url,
                   MONKEY_DATA_DIR=str(self.tmp))
        env.update(extra or {})
        return env

    def spawn(self, name: str, args: list[str], extra_env: dict | None = None,
              wrap: list[str] | None = None):
        """Start `monkey ARGS`; `wrap` is a command it runs under (`ip netns exec NAME`
        for another host, tests/chaos/hosts.py), which must exec it, keeping its pid."""
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", "monkey.cli", *args], cwd=REPO,
            env=self.process_env(extra_env), stdout=log, stderr=subprocess.STDOUT,
        )
        proc.log_path = self.tmp / f"{name}.log"
        self.procs.append(proc)
        return proc

    # API -------------------------------------------------------------------------
    def start_api(self, extra_env: dict | None = None, *, wrap: list[str] | None = None,
                  host: str = "127.0.0.1") -> None:
        for attempt in (1, 2):
            self.api_port, self.api_host = free_port(), host
            proc = self.spawn("api", ["api", "--host", host, "--port", str(self.api_port)],
                              extra_env, wrap)
            self.api_proc = proc
            try:
                # Ready in about 1 s here; 60 s leaves room for a machine stalled by other
                # work. One CI run saw an API not ready after 30 s, once in hundreds of
                # starts, with nothing to say why: a start that hangs is reported, with
                # its stacks, and tried once more, as the test is about something else.
                wait_until(lambda: self._ready(proc), 60, "API ready", proc)  # noqa: B023
                return
            except AssertionError as exc:
                if attempt == 2 or proc.returncode not in (None, -signal.SIGABRT):
                    raise
                with warnings.catch_warnings():  # in the warnings summary, not an error
                    warnings.simplefilter("always")
                    warnings.warn(f"API start hung, starting another: {exc}", stacklevel=2)

    def _ready(self, proc) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    def new_key(self, name: str = "test") -> str:
        return asyncio.run(create_api_key(self.settings, name))

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        key = self.key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw)
        self._clients.append(c)
        return c

    # Workers -----------------------------------------------------------------------
    def start_worker(self, queues: str = "llm", concurrency: int = 8,
                     extra_env: dict | None = None, timeout: float = 60,
                     wrap: list[str] | None = None):
        name = f"worker-{queues}-{len(self.procs)}"
        proc = self.spawn(name, ["worker", "--queues", queues, "--concurrency",
                                 str(concurrency)], extra_env, wrap)
        r = redis.Redis.from_url(self.redis_url)
        wait_until(lambda: _worker_ready(r, proc.pid), timeout, f"{name} ready", proc)
        return proc

    def kill(self, proc, sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(10)

    # Jobs ------------------------------------------------------------------------------
    def submit(self, client: httpx.Client | None = None, **body) -> dict:
        body.setdefault("model", "debug/echo")
        resp = (client or self.default_client).post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        return resp.json()

    @property
    def default_client(self) -> httpx.Client:
        if self._default is None:
            self._default = self.client()
        return self._default

    def get(self, job_id: str, client: httpx.Client | None = None) -> dict:
        resp = (client or self.default_client).get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, job_id: str, timeout: float = 30, until=TERMINAL,
             client: httpx.Client | None = None) -> dict:
        found = {}

        def check() -> bool:
            found["job"] = self.get(job_id, client)
            return found["job"]["status"] in until

        try:
            wait_until(check, timeout, f"job {job_id} in {until}")
        except AssertionError as exc:
            job = found.get("job") or {}
            r = redis.Redis.from_url(self.redis_url)
            raise AssertionError(
                f"{exc}; last seen: status={job.get('status')} attempts={job.get('attempts')}; "
                f"llm queue={r.llen('llm')} unacked={r.hlen('unacked')}\n{self.logs()}"
            ) from None
        return found["job"]

    def events(self, job_id: str, *, last_event_id: str | None = None, limit: int | None = None,
               timeout: float = 30, key: str | None = None) -> list[tuple[str | None, str, dict]]:
        """Read the job's SSE stream until the server closes it (or `limit` events)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        out: list = []
        with self.client(key, timeout=timeout).stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers
        ) as resp:
            assert resp.status_code == 200, resp.read()
            for event in parse_sse(resp.iter_lines()):
                out.append(event)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        # Their children too (the API's control process): one left behind would lead
        # the reconciler of a Redis database that a later stack reuses.
        children = []
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    children += psutil.Process(proc.pid).children(recursive=True)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _, alive = psutil.wait_procs(children, timeout=20)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log_path.read_text(errors='replace')[-4000:]}"
            for p in self.procs
        )


def parse_sse(lines) -> Iterator[tuple[str | None, str, dict]]:
    id_, type_, data = None, "message", []
    for line in lines:
        if line == "":
            if data:
                yield id_, type_, json.loads("\n".join(data))
            id_, type_, data = None, "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                id_ = value
            elif name == "event":
                type_ = value
            elif name == "data":
                data.append(value)


def streamed_text(events: list) -> str:
    """The text a client reading the SSE stream ends up with: restarts replace it."""
    text = ""
    for _, kind, data in events:
        if kind == "status" and data.get("restarted"):
            text = ""
        elif kind == "token":
            text += data["text"]
    return text


def _worker_ready(r: redis.Redis, pid: int) -> bool:
    for key in r.scan_iter(match="monkey:worker:*"):
        info = r.hgetall(key)
        if info.get(b"pid") == str(pid).encode() and info.get(b"ready") == b"1":
            return True
    return False


def _log_tail(proc) -> str:
    """The end of a Stack process's log; one still running is stopped with SIGABRT
    first, so that faulthandler (PYTHONFAULTHANDLER, FAST_ENV) writes every thread's
    stack into it."""
    log_path = getattr(proc, "log_path", None)
    if log_path is None:
        return ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    return "\n" + log_path.read_text(errors="replace")[-8000:]


def wait_until(check, timeout: float, what: str, proc=None, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}"
                                 f"{_log_tail(proc)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 f"{_log_tail(proc)}")
        time.sleep(interval)


@pytest.fixture
def make_stack(tmp_path_factory, redis_base):
    """Factory: make_stack(db="sqlite"|"postgres", api=True, env={}, redis_url=None)."""
    made: list[Stack] = []

    def factory(db: str = "sqlite", *, api: bool = True, env: dict | None = None,
                redis_url: str | None = None) -> Stack:
        tmp = tmp_path_factory.mktemp(f"stack-{db}")
        stack = Stack(make_database(db, tmp), redis_url or fresh_redis_url(redis_base), tmp,
                      env=dict(env or {}))
        made.append(stack)
        upgrade(stack.settings)
        stack.key = stack.new_key()
        if api:
            stack.start_api()
        return stack

    yield factory
    for stack in made:
        stack.stop()
        if stack.db.drop:
            stack.db.drop()


def module_stack(db: str, tmp_path_factory, redis_base: str, name: str,
                 env: dict | None = None) -> Iterator[Stack]:
    """The body of a module-wide stack fixture: an API and one llm worker on `db`."""
    tmp = tmp_path_factory.mktemp(f"{name}-{db}")
    if db == "postgres" and postgres_admin_url() is None:
        need("PostgreSQL", "not reachable")
    stack = Stack(make_database(db, tmp), fresh_redis_url(redis_base), tmp, env=dict(env or {}))
    upgrade(stack.settings)
    stack.key = stack.new_key()
    stack.start_api()
    stack.start_worker("llm", concurrency=8)
    yield stack
    stack.stop()
    if stack.db.drop:
        stack.db.drop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def echo_stack(request, tmp_path_factory, redis_base):
    """A module-wide stack per database with one llm worker."""
    yield from module_stack(request.param, tmp_path_factory, redis_base, "echo")


# Tests that run the services as subprocesses (end to end, chaos) carry the `e2e` marker,
# so `pytest -m "not e2e"` is the fast loop: in-process app, store, units.
_STACK_FIXTURES = {"make_stack", "echo_stack", "stack", "web_stack", "private_postgres"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if _STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
