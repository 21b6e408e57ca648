"""The operators' history: the control process's samples of the queues (finished jobs
per interval included) kept an hour in Redis, and GET /v1/ops/history, on SQLite and
Postgres with a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from api.deps import Principal
from api.main import create_app
from api.services import jobs as jobs_svc
from api.services.ops_history import (
    HISTORY_KEY,
    HistorySampler,
    read_history,
    store_sample,
    take_sample,
)
from common.db import ApiKey, async_sessions, make_async_engine
from common.keys import generate_key, hash_key
from common.migrate import upgrade
from common.producer import StubProducer
from common.schemas import JobCreate
from common.settings import Settings
from tests.conftest import fresh_redis_url, make_database

KEYS = [Principal(key_id=f"key_{i}", name=f"k{i}") for i in range(3)]


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path, redis_base):
    db = make_database(request.param, tmp_path)
    s = Settings(DATABASE_URL=db.url, REDIS_URL=fresh_redis_url(redis_base),
                 MONKEY_DATA_DIR=str(tmp_path), MONKEY_WEB_DIR=str(tmp_path / "no-web"),
                 MONKEY_OPS_SAMPLE_S=0.2)
    upgrade(s)
    yield s
    if db.drop:
        db.drop()


async def _add_jobs(settings: Settings, sessions, now: datetime) -> None:
    """Across three keys: llm jobs queued (interactive), running, finished 5 s and
    100 s ago; a gpu embed job queued at batch priority."""
    async with sessions() as s:
        s.add_all([ApiKey(id=p.key_id, name=p.name, key_hash=p.key_id, prefix="mk-")
                   for p in KEYS])
        await s.commit()

    async def add(principal, status, *, finished_s=None, priority="interactive", **body):
        body.setdefault("model", "debug/echo")
        values = jobs_svc.new_job_values(settings=settings, principal=principal,
                                         job_in=JobCreate(priority=priority, **body))
        values["status"] = status
        if finished_s is not None:
            values["finished_at"] = now - timedelta(seconds=finished_s)
        async with sessions() as s:
            await s.execute(jobs_svc._INSERT_JOB, values)
            await s.commit()

    prompt = {"input": {"prompt": "x"}}
    await add(KEYS[0], "queued", **prompt)
    await add(KEYS[1], "running", **prompt)
    await add(KEYS[0], "succeeded", finished_s=5, **prompt)
    await add(KEYS[2], "failed", finished_s=4, **prompt)
    await add(KEYS[1], "succeeded", finished_s=100, **prompt)
    await add(KEYS[2], "queued", priority="batch", model="local/all-MiniLM-L6-v2",
              kind="embed", input={"texts": ["a"]})


def test_a_sample_counts_the_queues_and_the_jobs_finished_in_its_interval(settings):
    async def go() -> None:
        engine = make_async_engine(settings)
        sessions = async_sessions(engine)
        redis = aioredis.Redis.from_url(settings.redis_url)
        now = time.time()
        await _add_jobs(settings, sessions, datetime.fromtimestamp(now, UTC))
        sample = await take_sample(sessions=sessions, redis=redis, since=now - 10, now=now)
        q = {x["queue"]: x for x in sample["queues"]}
        assert sample["at"] == pytest.approx(now, abs=0.01) and sample["interval_s"] == 10
        assert q["llm"]["finished"] == 2 and q["gpu"]["finished"] == 0  # not the 100 s one
        assert q["llm"]["running"] == 1 and q["llm"]["priorities"]["interactive"]["depth"] == 1
        assert q["gpu"]["priorities"]["batch"]["depth"] == 1

        # Kept an hour: an older sample goes when the next one is written.
        old = {**sample, "at": now - 3700}
        await redis.zadd(HISTORY_KEY, {json.dumps(old): old["at"]})
        await store_sample(redis, sample)
        assert [s["at"] for s in await read_history(redis)] == [sample["at"]]
        assert await read_history(redis, since=sample["at"]) == []
        assert await redis.ttl(HISTORY_KEY) > 3600
        await redis.aclose()
        await engine.dispose()

    asyncio.run(go())


def test_two_samplers_take_one_sample_per_interval(settings):
    async def go() -> None:
        engine = make_async_engine(settings)
        sessions = async_sessions(engine)
        redis = aioredis.Redis.from_url(settings.redis_url)
        samplers = [HistorySampler(sessions=sessions, redis=redis, every_s=0.2)
                    for _ in range(2)]
        for s in samplers:
            s.start()
        try:
            while len(await read_history(redis)) < 6:
                await asyncio.sleep(0.05)
        finally:
            for s in samplers:
                await s.stop()
        times = [s["at"] for s in await read_history(redis)]
        # Whichever took each one, consecutive samples are an interval apart, not two
        # samplers' worth; each sample's interval starts where the one before it ended.
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) > 0.15, gaps
        intervals = [s["interval_s"] for s in (await read_history(redis))[1:]]
        assert intervals == pytest.approx(gaps, abs=0.002)
        await redis.aclose()
        await engine.dispose()

    asyncio.run(go())


def test_the_history_route_answers_the_last_hour_behind_a_key(settings):
    key = generate_key()
    with TestClient(create_app(settings, producer=StubProducer())) as client:
        state = client.app.state.monkey

        async def setup() -> list[float]:
            async with state.sessions() as s:
                s.add(ApiKey(id="key_ops", name="ops", key_hash=hash_key(key), prefix=key[:8]))
                await s.commit()
            now = time.time()
            made = []
            for ago in (30, 20, 10):
                sample = await take_sample(sessions=state.sessions, redis=state.redis,
                                           since=now - ago - 10, now=now - ago)
                await store_sample(state.redis, sample)
                made.append(sample["at"])
            return made

        made = client.portal.call(setup)
        assert client.get("/v1/ops/history").status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        body = client.get("/v1/ops/history", headers=auth).json()
        assert body["object"] == "list" and body["sample_s"] == 0.2
        assert [s["at"] for s in body["data"]] == made
        assert {q["queue"] for q in body["data"][0]["queues"]} == {"gpu", "llm"}
        newer = client.get("/v1/ops/history", params={"since": made[1]}, headers=auth).json()
        assert [s["at"] for s in newer["data"]] == made[2:]
        assert client.get("/v1/ops/history", params={"since": -1},
                          headers=auth).status_code == 422
