"""The job store's bulk forms (a worker's chunk of batch lines), on a real database and
a real Redis: one claim for many jobs, one finish for many, each row fenced by its own
attempt, with the events its followers need."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from common.db import Job, utcnow
from common.events import decode, events_key
from common.ids import new_id
from common.jobs import JobStatus, transition
from common.store import End, JobStore
from tests.conftest import fresh_redis_url, job_store, migrated

S = JobStatus


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, redis_base):
    with migrated(request.param, tmp_path, fresh_redis_url(redis_base)) as settings, \
            job_store(settings) as st:
        yield st


def add_jobs(store: JobStore, n: int, **extra) -> list[str]:
    ids = [new_id("job") for _ in range(n)]
    with store.sessions() as s:
        s.add_all([Job(id=i, owner_id="key_a", kind="generate", model="debug/echo",
                       queue="llm", status=S.QUEUED, priority="batch",
                       input={"prompt": f"line {i}"}, params={}, metadata_={}, metrics={},
                       attempts=0, created_at=utcnow(), batch_id="batch_x", **extra)
                   for i in ids])
        s.commit()
    return ids


def rows(store: JobStore, ids: list[str]) -> dict[str, Job]:
    with store.sessions() as s:
        return {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(ids)))}


def stream(store: JobStore, job_id: str) -> list[tuple[str, dict]]:
    return [decode(f) for _, f in store.client.xrange(events_key(job_id))]


def test_claim_many_takes_every_queued_job_once(store):
    ids = add_jobs(store, 5)
    with store.sessions() as s:  # one of them was taken by someone else already
        s.execute(transition(ids[1], S.RUNNING, attempts=1))
        s.commit()
    claimed = store.claim_many(ids, worker_id="w1")
    assert sorted(r.id for r in claimed) == sorted(ids[:1] + ids[2:])
    assert all(r.status == S.RUNNING and r.attempts == 1 and r.worker_id == "w1"
               and r.lease_expires_at is not None and r.started_at is not None
               for r in claimed)
    # A duplicate delivery of the same chunk claims nothing.
    assert store.claim_many(ids, worker_id="w2") == []
    assert {j.worker_id for j in rows(store, ids).values()} == {"w1", None}


def test_claim_many_expires_jobs_past_their_start_by(store):
    late = add_jobs(store, 2, start_by=utcnow() - timedelta(seconds=1))
    fine = add_jobs(store, 2, start_by=utcnow() + timedelta(hours=1))
    claimed = store.claim_many(late + fine, worker_id="w1")
    assert sorted(r.id for r in claimed) == sorted(fine)
    now = rows(store, late)
    assert {j.status for j in now.values()} == {S.EXPIRED}
    assert all(j.error["type"] == "expired" for j in now.values())
    types = [t for t, _ in stream(store, late[0])]
    assert types == ["status", "done"]


def test_finish_many_writes_each_line_once_fenced_by_its_attempt(store):
    ids = add_jobs(store, 4)
    claimed = {r.id: r for r in store.claim_many(ids, worker_id="w1")}
    # The second line's lease lapsed and it was requeued and claimed again (attempt 2):
    # the first attempt's end must not land.
    with store.sessions() as s:
        s.execute(transition(ids[1], S.QUEUED, attempt=1, lease_expires_at=None))
        s.commit()
    assert [r.id for r in store.claim_many([ids[1]], worker_id="w2")] == [ids[1]]
    ends = [End(i, claimed[i].attempts, S.SUCCEEDED, output={"text": f"out {i}"},
                metrics={"run_ms": 1.0}) for i in ids[:3]]
    ends.append(End(ids[3], 1, S.FAILED, error={"type": "timeout", "message": "too slow"}))
    envs = store.finish_many(ends)
    assert sorted(e["id"] for e in envs) == sorted([ids[0], ids[2], ids[3]])
    now = rows(store, ids)
    assert now[ids[0]].status == S.SUCCEEDED and now[ids[0]].output == {"text": f"out {ids[0]}"}
    assert now[ids[0]].metrics == {"run_ms": 1.0} and now[ids[0]].finished_at is not None
    assert now[ids[0]].lease_expires_at is None
    assert now[ids[1]].status == S.RUNNING and now[ids[1]].attempts == 2
    assert now[ids[1]].output is None
    assert now[ids[3]].status == S.FAILED and now[ids[3]].error["type"] == "timeout"
    # Each written line tells its followers: (error,) status, done with the envelope.
    assert [t for t, _ in stream(store, ids[0])] == ["status", "done"]
    assert stream(store, ids[0])[1][1]["output"] == {"text": f"out {ids[0]}"}
    assert [t for t, _ in stream(store, ids[3])] == ["error", "status", "done"]
    assert stream(store, ids[1]) == []
    assert 0 < store.client.ttl(events_key(ids[0])) <= store.settings.batch_events_ttl_s
    # Delivered twice: the same ends write nothing the second time, and say nothing.
    assert store.finish_many(ends) == []
    assert [t for t, _ in stream(store, ids[0])] == ["status", "done"]


def test_finish_many_matches_finish_one_by_one(store):
    bulk, single = add_jobs(store, 3), add_jobs(store, 3)
    store.claim_many(bulk + single, worker_id="w1")
    outcomes = [(S.SUCCEEDED, {"text": "a", "usage": {"total_tokens": 1}}, None),
                (S.CANCELLED, None, None),
                (S.FAILED, None, {"type": "internal_error", "message": "boom"})]
    store.finish_many([End(j, 1, to, out, err, {"run_ms": 2.0})
                       for j, (to, out, err) in zip(bulk, outcomes, strict=True)])
    for j, (to, out, err) in zip(single, outcomes, strict=True):
        store.finish(j, attempt=1, to=to, output=out, error=err, metrics={"run_ms": 2.0})
    now = rows(store, bulk + single)
    for b, s_ in zip(bulk, single, strict=True):
        for col in ("status", "output", "error", "metrics", "attempts", "lease_expires_at"):
            assert getattr(now[b], col) == getattr(now[s_], col), col
        assert [t for t, _ in stream(store, b)] == [t for t, _ in stream(store, s_)]
