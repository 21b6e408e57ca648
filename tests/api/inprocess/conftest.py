"""The API app in this process (Starlette's TestClient runs its lifespan on one event
loop thread) on a migrated SQLite in a tmp dir and a Redis database of its own, with
the StubProducer in place of Celery and the reconciler's loop off: a request costs
milliseconds, and what the app sent to the broker is `inproc.stub.messages`.

One app per module; each test gets a key of its own (so it sees only its own jobs)
and an empty stub.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from api.main import create_app
from api.state import AppState
from common.constants import BROKER_EPOCH
from common.db import ApiKey, Job, make_sync_engine, utcnow
from common.events import EventWriter
from common.ids import new_id
from common.keys import generate_key, hash_key
from common.migrate import upgrade
from common.producer import StubProducer
from common.settings import Settings
from common.store import JobStore
from tests.conftest import fresh_redis_url, parse_sse


@dataclass
class InProcess:
    client: TestClient
    stub: StubProducer

    @property
    def state(self) -> AppState:
        return self.client.app.state.monkey

    def new_key(self, name: str = "test") -> str:
        return self.client.portal.call(self._add_key, name)

    async def _add_key(self, name: str) -> str:
        key = generate_key()
        async with self.state.sessions() as s:
            s.add(ApiKey(id=new_id("key"), name=name, key_hash=hash_key(key), prefix=key[:8]))
            await s.commit()
        return key

    def backdate(self, job_id: str, seconds: float) -> None:
        """Make the job look `seconds` older (past the reconciler's grace for young jobs)."""
        self.client.portal.call(self._backdate, job_id, seconds)

    async def _backdate(self, job_id: str, seconds: float) -> None:
        async with self.state.sessions() as s:
            await s.execute(update(Job).where(Job.id == job_id).values(
                created_at=utcnow() - timedelta(seconds=seconds)))
            await s.commit()

    def auth(self, key: str) -> dict:
        return {"Authorization": f"Bearer {key}"}

    def submit(self, **body) -> dict:
        body.setdefault("model", "debug/echo")
        body.setdefault("input", {"prompt": "hello"})
        resp = self.client.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def events(self, job_id: str, **kw) -> list[tuple[str | None, str, dict]]:
        """The job's SSE stream, read until the server ends it (a finished job's)."""
        with self.client.stream("GET", f"/v1/jobs/{job_id}/events", **kw) as resp:
            assert resp.status_code == 200, resp.read()
            return list(parse_sse(resp.iter_lines()))


@pytest.fixture(scope="module")
def inproc_app(tmp_path_factory, redis_base) -> Iterator[InProcess]:
    tmp = tmp_path_factory.mktemp("inproc")
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp / 'monkey.db'}", REDIS_URL=fresh_redis_url(redis_base),
        MONKEY_DATA_DIR=str(tmp), MONKEY_WEB_DIR=str(tmp / "no-web"),
        MONKEY_RATE_LIMIT_PER_S=0, OPENAI_API_KEY="",
    )
    upgrade(settings)
    stub = StubProducer()
    with TestClient(create_app(settings, producer=stub)) as client:
        assert stub.started
        yield InProcess(client, stub)
    assert stub.closed


@pytest.fixture
def inproc(inproc_app: InProcess) -> InProcess:
    """The module's app, with a fresh key sent by default and an empty stub."""
    inproc_app.client.headers["Authorization"] = f"Bearer {inproc_app.new_key()}"
    inproc_app.stub.take()
    inproc_app.stub.broker_down = False
    return inproc_app


@pytest.fixture
def worker(inproc: InProcess) -> Iterator[JobStore]:
    """A worker's job store on the app's database and Redis: claim, tokens, finish."""
    settings = inproc.state.settings
    engine = make_sync_engine(settings)
    client = redis.Redis.from_url(settings.redis_url)
    events = EventWriter(client, maxlen=settings.events_maxlen, ttl_s=60, coalesce_s=0)
    store = JobStore(engine=engine, events=events, settings=settings)
    yield store
    events.close()
    store.close()
    client.close()
    engine.dispose()


@pytest.fixture
def empty_app(inproc: InProcess) -> InProcess:
    """The module's app with no job in its database and nothing in its Redis (but the
    reconciler's epoch marker: no broker loss, only what the test sets up)."""
    inproc.client.portal.call(_empty, inproc.state)
    return inproc


async def _empty(state: AppState) -> None:
    async with state.sessions() as s:
        await s.execute(delete(Job))
        await s.commit()
    await state.redis.flushdb()
    await state.redis.set(BROKER_EPOCH, "test")
