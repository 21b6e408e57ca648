"""The producer seam: the real producer sends one job from the event loop and many rows
in bulk onto the queues' priority lists, marks what publish_soon sent, and turns a
broker outage into `broker_down` and BrokerUnavailable without losing a job; the stub
records the same messages in memory."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import redis
from sqlalchemy import select

from common.db import Base, Job, async_sessions, make_async_engine, utcnow
from common.errors import BrokerUnavailable
from common.producer import CeleryProducer, Producer, StubProducer, TaskMessage
from common.settings import Settings
from monkey.embedded import free_port
from tests.conftest import fresh_redis_url

ONE = {"job_id": "job_one", "kind": "generate", "model": "debug/echo", "queue": "llm",
       "priority": "interactive"}
ROWS = [{"id": "job_many1", "kind": "embed", "model": "local/all-MiniLM-L6-v2", "queue": "gpu",
         "priority": "batch", "attempts": 2},
        {"id": "job_many2", "kind": "generate", "model": "debug/echo", "queue": "llm",
         "priority": "batch", "attempts": 0}]


def _task_ids(r: redis.Redis, key: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in reversed(r.lrange(key, 0, -1))]


def _run(settings: Settings, scenario) -> dict:
    """Runs scenario(producer) against a fresh SQLite holding the jobs' rows; returns
    job id -> published_at after the producer closed."""
    async def main() -> dict:
        engine = make_async_engine(settings)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessions(engine)
        async with sessions() as s:
            for job_id in [ONE["job_id"], *(r["id"] for r in ROWS)]:
                s.add(Job(id=job_id, owner_id="key_t", kind="generate", model="debug/echo",
                          queue="llm", status="queued", priority="interactive", input={},
                          params={}, created_at=utcnow()))
            await s.commit()
        producer = CeleryProducer(settings, sessions)
        producer.start()
        try:
            await scenario(producer)
        finally:
            await producer.close()
        async with sessions() as s:
            marks = dict((await s.execute(select(Job.id, Job.published_at))).all())
        await engine.dispose()
        return marks

    return asyncio.run(main())


def _settings(tmp_path, redis_url: str) -> Settings:
    return Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}", REDIS_URL=redis_url)


def test_one_job_and_many_rows_reach_their_priority_lists(tmp_path, redis_base):
    url = fresh_redis_url(redis_base)

    async def scenario(producer: CeleryProducer) -> None:
        assert isinstance(producer, Producer)
        await producer.publish_soon(**ONE, wait_s=5)
        await producer.publish_many(ROWS)
        assert not producer.broker_down

    marks = _run(_settings(tmp_path, url), scenario)
    r = redis.Redis.from_url(url)
    assert _task_ids(r, "llm") == ["job_one.0"]
    # kombu's default names: the batch step's list is QUEUE + "\x06\x16" + "9".
    assert _task_ids(r, "llm\x06\x169") == ["job_many2.0"]
    assert _task_ids(r, "gpu\x06\x169") == ["job_many1.2"]
    [raw] = r.lrange("gpu\x06\x169", 0, -1)
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert body[:2] == [["job_many1"], {"model": "local/all-MiniLM-L6-v2"}]
    # publish_soon marks what it sent; bulk callers mark their rows themselves.
    assert marks["job_one"] is not None
    assert marks["job_many1"] is None and marks["job_many2"] is None


def test_a_broker_that_is_away_is_broker_down_and_loses_no_job(tmp_path):
    closed = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario(producer: CeleryProducer) -> None:
        await producer.publish_soon(**ONE, wait_s=5)  # never raises: the job waits
        assert producer.broker_down
        with pytest.raises(BrokerUnavailable) as caught:
            await producer.publish_many(ROWS)
        assert caught.value.__cause__ is not None
        assert producer.broker_down

    marks = _run(_settings(tmp_path, closed), scenario)
    assert set(marks.values()) == {None}  # all left for the reconciler


def test_the_stub_records_the_messages_the_real_one_sends():
    stub = StubProducer()
    assert isinstance(stub, Producer)

    async def scenario() -> None:
        stub.start()
        await stub.publish_soon(**ONE)
        await stub.publish_many(ROWS)
        stub.broker_down = True
        await stub.publish_soon(**{**ONE, "job_id": "job_lost"})
        with pytest.raises(BrokerUnavailable):
            await stub.publish_many(ROWS)
        await stub.close()

    asyncio.run(scenario())
    assert stub.started and stub.closed
    assert stub.take() == [TaskMessage(**ONE), *map(TaskMessage.of_row, ROWS)]
    assert stub.take() == []
    first = TaskMessage.of_row(ROWS[0])
    assert (first.task, first.task_id, first.priority_value) == ("monkey.embed", "job_many1.2", 9)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_marks_skip_rows_another_transaction_holds(tmp_path, kind):
    """The flush of publish marks neither waits for a row another transaction holds nor
    keeps the rest of its lot locked behind it (that stalled the reconciler's recovery
    of those jobs), and marks only jobs still queued."""
    from sqlalchemy import create_engine, text

    from common.migrate import upgrade
    from common.producer.marks import PublishMarks
    from tests.conftest import make_database

    db = make_database(kind, tmp_path)
    settings = Settings(DATABASE_URL=db.url, REDIS_URL="redis://127.0.0.1:1/0",
                        MONKEY_DATA_DIR=str(tmp_path))
    upgrade(settings)
    ids = ["job_held", "job_free", "job_running"]

    async def main() -> dict:
        engine = make_async_engine(settings)
        sessions = async_sessions(engine)
        async with sessions() as s:
            for job_id in ids:
                s.add(Job(id=job_id, owner_id="key_t", kind="generate", model="debug/echo",
                          queue="llm", priority="interactive", input={}, params={},
                          status="running" if job_id == "job_running" else "queued",
                          created_at=utcnow()))
            await s.commit()
        marks = PublishMarks(sessions)
        for job_id in ids:
            marks.add(job_id, utcnow())
        sync = create_engine(settings.sync_database_url)
        try:
            if kind == "postgres":
                with sync.connect() as holder:
                    holder.execute(text("SELECT id FROM jobs WHERE id = 'job_held' FOR UPDATE"))
                    await asyncio.wait_for(marks.flush(), 5)  # not blocked by the holder
                    with sync.connect() as c:  # the free row is marked and not held
                        c.execute(text("SET lock_timeout = '1s'"))
                        c.execute(text("UPDATE jobs SET attempts = 1 WHERE id = 'job_free'"))
                        c.commit()
            else:
                await marks.flush()
            async with sessions() as s:
                return dict((await s.execute(select(Job.id, Job.published_at))).all())
        finally:
            sync.dispose()
            await engine.dispose()

    try:
        published = asyncio.run(main())
    finally:
        if db.drop:
            db.drop()
    assert published["job_free"] is not None
    assert published["job_running"] is None  # not queued: no mark
    assert (published["job_held"] is None) == (kind == "postgres")


def test_a_job_marked_in_its_insert_is_unmarked_when_its_send_fails(tmp_path, redis_base):
    """The fast path's jobs are marked in their INSERT (premark): a send that goes out
    costs no UPDATE, and one that fails leaves its job unmarked for the reconciler."""
    from sqlalchemy import update

    closed = f"redis://127.0.0.1:{free_port()}/0"
    open_ = fresh_redis_url(redis_base)

    def scenario_on(marked_at: dict):
        async def scenario(producer: CeleryProducer) -> None:
            premark = producer.premark()
            assert premark is not None  # nothing failed yet
            marked_at["at"] = premark
            async with producer.marks.sessions() as s:  # what create_job's INSERT writes
                await s.execute(update(Job).where(Job.id == ONE["job_id"])
                                .values(published_at=premark))
                await s.commit()
            await producer.publish_soon(**ONE, wait_s=5, marked=True)
        return scenario

    failed: dict = {}
    marks = _run(_settings(tmp_path, closed), scenario_on(failed))
    assert marks["job_one"] is None
    sent: dict = {}
    (tmp_path / "ok").mkdir()
    marks = _run(_settings(tmp_path / "ok", open_), scenario_on(sent))
    assert marks["job_one"] is not None
    assert marks["job_one"].replace(tzinfo=None) == sent["at"].replace(tzinfo=None)
    assert _task_ids(redis.Redis.from_url(open_), "llm") == ["job_one.0"]
