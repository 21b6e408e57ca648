"""The job store's async face (the API's and the control process's transitions) and the
event log's reader, on a real database and a real Redis, driven directly: no API
process, no worker, no polling."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import select, update

from common.batches_db import Batch
from common.constants import CANCEL_CHANNEL
from common.db import Job, async_sessions, make_async_engine, utcnow
from common.errors import Conflict, NotFound
from common.events import AsyncEventLog, decode, events_key
from common.ids import new_id
from common.jobs import BatchStatus, JobStatus
from common.settings import Settings
from common.store import AsyncJobStore, due_for_recovery
from tests.conftest import fresh_redis_url, migrated

S = JobStatus


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path, redis_base):
    with migrated(request.param, tmp_path, fresh_redis_url(redis_base),
                  MONKEY_MAX_ATTEMPTS=2) as s:
        yield s


def run(settings: Settings, scenario):
    """Run `scenario(store, sessions)` on a fresh store, closed afterwards."""

    async def main():
        engine = make_async_engine(settings)
        client = aioredis.Redis.from_url(settings.redis_url)
        events = AsyncEventLog(client, maxlen=1000, ttl_s=60)
        store = AsyncJobStore(
            sessions=async_sessions(engine),
            auto_sessions=async_sessions(engine.execution_options(isolation_level="AUTOCOMMIT")),
            events=events, settings=settings)
        try:
            return await scenario(store)
        finally:
            await store.drain()
            await client.aclose()
            await engine.dispose()

    return asyncio.run(main())


async def add_job(store: AsyncJobStore, *, status=S.QUEUED, owner="key_a", attempts=0,
                  batch_id=None, **extra) -> str:
    job_id = new_id("job")
    async with store.sessions() as s:
        s.add(Job(id=job_id, owner_id=owner, kind="generate", model="debug/echo", queue="llm",
                  status=status, priority="interactive", input={"prompt": "a b"}, params={},
                  metadata_={}, metrics={}, attempts=attempts, created_at=utcnow(),
                  batch_id=batch_id, **extra))
        await s.commit()
    return job_id


def stream(settings: Settings, job_id: str) -> list[tuple[str, dict]]:
    r = redis.Redis.from_url(settings.redis_url)
    return [decode(fields) for _, fields in r.xrange(events_key(job_id))]


def test_cancelling_a_queued_job_ends_it_with_its_events(settings):
    async def scenario(store):
        job_id = await add_job(store)
        job = await store.cancel(job_id, owner_id="key_a")
        assert job.status == S.CANCELLED and job.finished_at is not None
        again = await store.cancel(job_id, owner_id="key_a")  # cancelling twice is fine
        assert again.status == S.CANCELLED
        return job_id

    job_id = run(settings, scenario)
    events = stream(settings, job_id)
    assert [t for t, _ in events] == ["status", "done"]  # once, not twice
    assert events[0][1] == {"status": "cancelled"}
    assert events[1][1]["id"] == job_id and events[1][1]["status"] == "cancelled"
    ttl = redis.Redis.from_url(settings.redis_url).ttl(events_key(job_id))
    assert 0 < ttl <= 60  # the finished job's stream expires


def test_cancelling_a_running_job_tells_its_worker(settings):
    listener = redis.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CANCEL_CHANNEL)
    listener.get_message(timeout=1)  # the subscription's own reply

    async def scenario(store):
        job_id = await add_job(store, status=S.RUNNING, attempts=1)
        job = await store.cancel(job_id, owner_id="key_a")
        assert job.status == S.CANCELLING
        return job_id

    job_id = run(settings, scenario)
    assert stream(settings, job_id) == [("status", {"status": "cancelling"})]
    told = listener.get_message(timeout=5)
    assert told is not None and told["data"] == job_id.encode()
    listener.close()


def test_cancel_refuses_other_keys_and_ended_jobs(settings):
    async def scenario(store):
        job_id = await add_job(store)
        with pytest.raises(NotFound):
            await store.cancel(job_id, owner_id="key_b")
        done = await add_job(store, status=S.SUCCEEDED, attempts=1)
        with pytest.raises(Conflict, match="already ended as succeeded"):
            await store.cancel(done, owner_id="key_a")
        return job_id, done

    job_id, done = run(settings, scenario)
    assert stream(settings, job_id) == [] and stream(settings, done) == []


def test_a_lapsed_lease_requeues_then_fails_once_attempts_are_spent(settings):
    past = utcnow() - timedelta(seconds=5)

    async def scenario(store):
        again = await add_job(store, status=S.RUNNING, attempts=1, lease_expires_at=past)
        spent = await add_job(store, status=S.RUNNING, attempts=2, lease_expires_at=past)
        live = await add_job(store, status=S.RUNNING, attempts=1,
                             lease_expires_at=utcnow() + timedelta(seconds=60))
        async with store.auto_sessions() as s:
            due = (await s.execute(due_for_recovery())).all()
        assert {j.id for j in due} == {again, spent}
        assert all([await store.recover(j) for j in due])
        assert not await store.recover(due[0])  # fenced: the row moved on
        statuses = {j: (await store.get(j)).status for j in (again, spent, live)}
        assert statuses == {again: S.QUEUED, spent: S.FAILED, live: S.RUNNING}
        assert (await store.get(spent)).error["type"] == "worker_lost"
        return again, spent

    again, spent = run(settings, scenario)
    assert stream(settings, again) == [
        ("status", {"status": "queued", "requeued": True, "reason": "lease lapsed"})]
    types = [t for t, _ in stream(settings, spent)]
    assert types == ["status", "done"]


def test_queued_jobs_past_their_start_by_expire(settings):
    async def scenario(store):
        late = await add_job(store, start_by=utcnow() - timedelta(seconds=1))
        on_time = await add_job(store, start_by=utcnow() + timedelta(seconds=60))
        assert await store.expire_due() == 1
        assert await store.expire_due() == 0
        assert (await store.get(on_time)).status == S.QUEUED
        return late

    late = run(settings, scenario)
    (t1, status), (t2, done) = stream(settings, late)
    assert (t1, status) == ("status", {"status": "expired"})
    assert t2 == "done" and done["error"]["type"] == "expired"


def test_a_batch_cancel_ends_its_lines_only_when_its_guard_holds(settings):
    # Queued lines end at once; running ones become cancelling and their workers are
    # told (a chunk's lines not started yet then end instead of running).
    listener = redis.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CANCEL_CHANNEL)

    async def scenario(store):
        batch_id = new_id("batch")
        async with store.sessions() as s:
            now = utcnow()
            s.add(Batch(id=batch_id, owner_id="key_a", endpoint="/v1/chat/completions",
                        input_file_id="file_x", completion_window="24h",
                        status=BatchStatus.IN_PROGRESS, metadata_={}, request_total=3,
                        request_completed=0, request_failed=0, lines_enqueued=3,
                        created_at=now, expires_at=now + timedelta(hours=24)))
            await s.commit()
        queued = [await add_job(store, batch_id=batch_id) for _ in range(2)]
        running = await add_job(store, batch_id=batch_id, status=S.RUNNING, attempts=1)
        other = await add_job(store)  # another batch's (no batch's) line is untouched

        def guard(expect):
            return (update(Batch).where(Batch.id == batch_id, Batch.status == expect)
                    .values(status=BatchStatus.CANCELLING))

        assert await store.cancel_batch_lines(batch_id, guard=guard("validating")) is None
        assert (await store.get(queued[0])).status == S.QUEUED  # nothing changed
        ids = await store.cancel_batch_lines(batch_id, guard=guard(BatchStatus.IN_PROGRESS))
        assert sorted(ids) == sorted(queued)
        await store.drain()
        async with store.auto_sessions() as s:
            b = (await s.execute(select(Batch.status).where(Batch.id == batch_id))).scalar()
        assert b == BatchStatus.CANCELLING
        statuses = [(await store.get(j)).status for j in [*queued, running, other]]
        assert statuses == [S.CANCELLED, S.CANCELLED, S.CANCELLING, S.QUEUED]
        assert (await store.get(queued[0])).error["type"] == "batch_cancelled"
        return queued, running

    queued, running = run(settings, scenario)
    for job_id in queued:
        assert [t for t, _ in stream(settings, job_id)] == ["status", "done"]
    assert stream(settings, running) == []
    told = []
    for _ in range(5):  # the first replies are the subscription's own
        msg = listener.get_message(timeout=0.5)
        if msg is not None:
            told.append(msg["data"].decode())
    assert told == [running]  # the running line only
    listener.close()


def test_the_reader_replays_resumes_and_ends_from_the_database(settings):
    async def scenario(store):
        job_id = await add_job(store)
        await store.events.append(job_id, [("status", {"status": "running"}),
                                           ("token", {"text": "a", "index": 0})])
        lookup = lambda: store.final_envelope(job_id)  # noqa: E731
        seen = []
        # The stream stays quiet while the job is queued: the reader says so (a
        # keep-alive is due) instead of blocking forever.
        async for chunk in store.events.follow(job_id, lookup=lookup, block_ms=50):
            if not chunk:
                break
            seen += chunk
        assert [e.type for e in seen] == ["status", "token"]
        # Resume after the first event; the job ends with no `done` of its own on the
        # stream (its worker died between the two writes): the database gives one.
        await store.cancel(job_id, owner_id="key_a")
        r = store.events.redis
        last = (await r.xrange(events_key(job_id)))[-1][0]
        await r.xdel(events_key(job_id), last)  # drop the store's own done
        resumed = [e async for chunk in store.events.follow(
            job_id, lookup=lookup, after=seen[0].id, block_ms=50, grace_ms=50) for e in chunk]
        assert [e.type for e in resumed] == ["token", "status", "done"]
        assert resumed[-1].id is None and resumed[-1].data["status"] == "cancelled"
        return job_id

    run(settings, scenario)


def test_events_are_written_in_one_shape(settings):
    """Every writer goes through common.events.append: type and compact JSON data."""

    async def scenario(store):
        await store.events.append("job_x", [("progress", {"done": 1, "total": 2})])

    run(settings, scenario)
    raw = redis.Redis.from_url(settings.redis_url).xrange(events_key("job_x"))
    assert raw[0][1] == {b"type": b"progress", b"data": json.dumps(
        {"done": 1, "total": 2}, separators=(",", ":")).encode()}
