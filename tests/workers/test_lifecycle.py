"""The lifecycle's rules, driven directly (no Celery): the attempt fence, duplicate
deliveries, lease loss and the event stream."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from common.db import Job, utcnow
from common.events import decode, events_key
from common.ids import new_id
from common.jobs import JobStatus, transition
from tests.conftest import fresh_redis_url, migrated, wait_until, worker_on
from workers import lifecycle
from workers.runtimes.base import GenerateResult
from workers.supervisor import Supervisor
from workers.worker import Worker


@pytest.fixture
def state(tmp_path, redis_base):
    with migrated("sqlite", tmp_path, fresh_redis_url(redis_base)) as settings, \
            worker_on(settings) as worker:
        yield worker


def add_job(state: Worker, prompt: str = "a b c", start_by=None) -> str:
    job_id = new_id("job")
    with state.sessions() as s:
        s.add(Job(id=job_id, owner_id="key_x", kind="generate", model="debug/echo", queue="llm",
                  status="queued", priority="interactive", input={"prompt": prompt},
                  params={}, metadata_={}, metrics={}, attempts=0, created_at=utcnow(),
                  start_by=start_by))
        s.commit()
    return job_id


def row(state: Worker, job_id: str) -> Job:
    with state.sessions() as s:
        return s.execute(select(Job).where(Job.id == job_id)).scalar_one()


def requeue(state: Worker, job_id: str, attempt: int) -> None:
    """What the reconciler does when a lease lapses."""
    with state.sessions() as s:
        res = s.execute(transition(job_id, JobStatus.QUEUED, attempt=attempt,
                                   lease_expires_at=None))
        s.commit()
        assert res.rowcount == 1


def test_a_late_write_of_an_old_attempt_is_refused(state):
    job_id = add_job(state)
    old = lifecycle.JobRun(state, lifecycle.claim(state, job_id))
    assert old.spec.attempt == 1
    requeue(state, job_id, attempt=1)
    new = lifecycle.JobRun(state, lifecycle.claim(state, job_id))
    assert new.spec.attempt == 2

    result = GenerateResult("late", "stop", 1, 1)
    assert not lifecycle.finish(old, JobStatus.SUCCEEDED,
                                output=lifecycle.output_of(result), result=result)
    assert row(state, job_id).status == "running"

    good = GenerateResult("a b c", "stop", 3, 3)
    assert lifecycle.finish(new, JobStatus.SUCCEEDED, output=lifecycle.output_of(good),
                            result=good)
    # And the old attempt cannot overwrite a finished job either.
    assert not lifecycle.finish(old, JobStatus.FAILED, error={"type": "x", "message": "y"})
    final = row(state, job_id)
    assert final.status == "succeeded" and final.attempts == 2
    assert final.output["text"] == "a b c"


def test_a_duplicate_delivery_does_not_run_the_job_twice(state):
    job_id = add_job(state)
    assert lifecycle.claim(state, job_id) is not None
    assert lifecycle.claim(state, job_id) is None  # already running
    assert row(state, job_id).attempts == 1


def test_execute_streams_events_and_writes_one_result(state):
    job_id = add_job(state, "one two three")
    lifecycle.execute(state, job_id)
    state.events.close()
    r = redis.Redis.from_url(state.settings.redis_url)
    events = [decode(f) for _, f in r.xrange(events_key(job_id))]
    types = [t for t, _ in events]
    assert types[0] == "status" and types[-2:] == ["status", "done"]
    tokens = [d for t, d in events if t == "token"]
    assert set(types[1:-2]) == {"token"} and 1 <= len(tokens) <= 3  # coalesced when fast
    assert "".join(d["text"] for d in tokens) == "one two three"
    assert tokens[0]["index"] == 0
    assert events[-1][1]["output"]["text"] == "one two three"
    assert r.ttl(events_key(job_id)) > 0  # the stream expires after the job ends
    lifecycle.execute(state, job_id)  # a late redelivery: nothing happens
    assert r.xlen(events_key(job_id)) == len(events)


def test_a_run_that_loses_its_lease_stops_and_writes_nothing(state):
    job_id = add_job(state, " ".join(["w"] * 50))
    got = lifecycle.claim(state, job_id)
    requeue(state, job_id, attempt=1)  # the reconciler took the job away
    run = lifecycle.JobRun(state, got)
    state.runs.add(run)
    state.supervisor.beat()
    assert run.stop_reason() == "lease_lost"
    state.runs.remove(run)
    assert row(state, job_id).status == "queued"


def test_a_run_whose_end_was_just_written_is_no_lost_lease(state, caplog):
    """The heartbeat took its list of runs, then the run's end was written: its job is
    no longer running, and that is no loss to warn of."""
    job_id = add_job(state)
    got = lifecycle.claim(state, job_id)
    run = lifecycle.JobRun(state, got)
    state.runs.add(run)
    assert lifecycle.finish(run, JobStatus.SUCCEEDED, output={"text": "a b c"})
    with caplog.at_level("WARNING", logger="monkey.worker"):
        state.supervisor.beat()
    assert "lease lost" not in [r.getMessage() for r in caplog.records]
    assert row(state, job_id).status == "succeeded"


def test_leases_are_renewed_while_redis_does_not_answer(state):
    """A partition from Redis alone: publishing the worker's presence hangs (here for
    the client's 30 s socket timeout), and the leases, kept in the database, are
    renewed all the same."""
    hole = socket.create_server(("127.0.0.1", 0))  # takes connections, answers nothing
    silent = redis.Redis(port=hole.getsockname()[1], socket_timeout=30)
    settings = state.settings.model_copy(update={"heartbeat_s": 0.05, "lease_s": 60})
    supervisor = Supervisor(settings, worker_id="cut-off:1:llm", queues=["llm"],
                            redis_client=silent, db=state.autocommit, runs=state.runs,
                            loaded_models=list)
    job_id = add_job(state)
    run = lifecycle.JobRun(state, lifecycle.claim(state, job_id))
    state.runs.add(run)
    claimed_lease = row(state, job_id).lease_expires_at
    supervisor.start()
    try:
        wait_until(lambda: row(state, job_id).lease_expires_at > claimed_lease, 10,
                   "the lease renewed")
    finally:
        hole.close()  # the hung calls fail at once
        supervisor.stop()
        state.runs.remove(run)
        run.close()


def test_a_job_past_its_start_by_expires_instead_of_running(state):
    late = add_job(state, start_by=utcnow() - timedelta(seconds=1))
    assert lifecycle.claim(state, late) is None
    job = row(state, late)
    assert job.status == "expired" and job.attempts == 0 and job.error["type"] == "expired"
    state.events.close()
    r = redis.Redis.from_url(state.settings.redis_url)
    types = [decode(f) for _, f in r.xrange(events_key(late))]
    assert [t for t, _ in types] == ["status", "done"] and types[1][1]["status"] == "expired"
    on_time = add_job(state, start_by=utcnow() + timedelta(seconds=60))
    assert lifecycle.claim(state, on_time).spec.attempt == 1


def test_a_cancel_heard_before_the_run_registers_stops_it(state):
    """A job is cancelled only once claimed, and the cancel message can reach the
    listener before the run is in the registry: registering the run then says so
    (lifecycle stops it at once). A cancel for a job running elsewhere stops nothing."""
    job_id = add_job(state, " ".join(["w"] * 200))
    got = lifecycle.claim(state, job_id)
    with state.sessions() as s:  # what the API's cancel does to a running job
        s.execute(transition(job_id, JobStatus.CANCELLING, expect={JobStatus.RUNNING}))
        s.commit()
    state.supervisor._on_cancel("job_elsewhere")
    state.supervisor._on_cancel(job_id)  # heard before the run registered
    run = lifecycle.JobRun(state, got)
    assert state.runs.add(run) is True
    assert state.runs.add(lifecycle.JobRun(state, got)) is False  # kept once
    state.runs.remove(run)

