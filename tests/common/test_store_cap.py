"""The per-key cap of running jobs in the job store's claims (MONKEY_MAX_RUNNING_PER_KEY),
on a real database: claims within the room the cap leaves, the rest held back with no
message, and many workers' claims at once never past the cap."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from common.db import Job, utcnow
from common.ids import new_id
from common.jobs import JobStatus
from common.store import JobStore
from tests.conftest import fresh_redis_url, job_store, migrated

S = JobStatus
CAP = 3


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, redis_base):
    with migrated(request.param, tmp_path, fresh_redis_url(redis_base),
                  MONKEY_MAX_RUNNING_PER_KEY=CAP) as settings, job_store(settings) as st:
        yield st


def add_jobs(store: JobStore, n: int, owner: str = "key_a", status=S.QUEUED,
             **extra) -> list[str]:
    ids = [new_id("job") for _ in range(n)]
    with store.sessions() as s:
        s.add_all([Job(id=i, owner_id=owner, kind="generate", model="debug/echo",
                       queue="llm", status=status, priority="interactive",
                       input={"prompt": "a"}, params={}, metadata_={}, metrics={},
                       attempts=0, created_at=utcnow(), published_at=utcnow(), **extra)
                   for i in ids])
        s.commit()
    return ids


def rows(store: JobStore, ids: list[str]) -> dict[str, Job]:
    with store.sessions() as s:
        return {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(ids)))}


def test_a_claim_past_the_keys_cap_holds_the_job_back(store):
    add_jobs(store, 1, status=S.RUNNING)  # one running already: room for two more
    ids = add_jobs(store, 5)
    other = add_jobs(store, 1, owner="key_b")

    claimed = store.claim_many(ids, worker_id="w1")
    assert sorted(r.id for r in claimed) == sorted(ids)[:2]  # the oldest, within the room
    after = rows(store, ids)
    ids = sorted(ids)
    for job_id in ids[2:]:
        assert after[job_id].status == S.QUEUED
        assert after[job_id].held_at is not None and after[job_id].published_at is None
    assert store.claim(ids[2], worker_id="w1") is None  # still no room: held again
    assert store.claim(other[0], worker_id="w1") is not None  # another key's job runs

    # A claimed job that was held once is held no more.
    with store.sessions() as s:
        s.get(Job, ids[0]).status = S.SUCCEEDED
        s.commit()
    got = store.claim(ids[2], worker_id="w1")
    assert got is not None and got.held_at is None and got.attempts == 1


def test_a_held_job_past_its_start_by_still_expires(store):
    past = add_jobs(store, 1, start_by=utcnow() - timedelta(seconds=1))
    assert store.claim(past[0], worker_id="w1") is None
    assert rows(store, past)[past[0]].status == S.EXPIRED


def test_many_workers_claiming_at_once_never_pass_the_cap(store):
    ids = add_jobs(store, 24)
    start = threading.Barrier(len(ids))
    results: list[bool] = []

    def claim(job_id: str) -> None:
        start.wait()
        results.append(store.claim(job_id, worker_id=f"w-{job_id}") is not None)

    threads = [threading.Thread(target=claim, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    after = rows(store, ids).values()
    assert sum(results) == CAP
    assert sum(j.status == S.RUNNING for j in after) == CAP
    assert sum(j.held_at is not None for j in after) == len(ids) - CAP
