"""Graceful drain (workers/drain.py): on SIGTERM a worker lets what fits in
MONKEY_DRAIN_S finish, hands the rest back at once (job requeued, fenced by its attempt;
message back on its queue, not stuck in kombu's `unacked`), and exits 0.

The first tests drive the lifecycle in-process (no Celery); the others run `monkey
worker` processes and signal them as a platform does on a redeploy."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis
from celery.exceptions import Reject
from sqlalchemy import create_engine, text

from common.db import Job, utcnow
from common.events import decode, events_key
from common.ids import new_id
from common.jobs import JobStatus, transition
from tests.conftest import fresh_redis_url, migrated, wait_until, worker_on
from tests.workers.test_lifecycle import row
from workers import lifecycle
from workers.worker import Worker

S = JobStatus
DRAIN_S = 4.0


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


# In-process: the lifecycle and the job store --------------------------------------------

@pytest.fixture
def state(tmp_path, redis_base):
    with migrated("sqlite", tmp_path, fresh_redis_url(redis_base),
                  MONKEY_DRAIN_S="0.4") as settings, worker_on(settings) as worker:
        yield worker


def add_slow_job(state: Worker, n_words: int = 50, delay_ms: int = 50) -> str:
    job_id = new_id("job")
    with state.sessions() as s:
        s.add(Job(id=job_id, owner_id="key_x", kind="generate", model="debug/echo", queue="llm",
                  status="queued", priority="interactive", input={"prompt": words(n_words)},
                  params={"delay_ms": delay_ms}, metadata_={}, metrics={}, attempts=0,
                  created_at=utcnow()))
        s.commit()
    return job_id


def execute_in_thread(state: Worker, job_id: str) -> dict:
    """lifecycle.execute as a task thread runs it; the outcome lands in the dict."""
    out: dict = {}

    def body() -> None:
        try:
            lifecycle.execute(state, job_id)
            out["returned"] = True
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["raised"] = exc

    out["thread"] = threading.Thread(target=body)
    out["thread"].start()
    wait_until(lambda: state.runs.get(job_id) is not None, 10, "run registered")
    return out


def stream(state: Worker, job_id: str) -> list[tuple[str, dict]]:
    r = redis.Redis.from_url(state.settings.redis_url)
    return [decode(f) for _, f in r.xrange(events_key(job_id))]


def test_a_run_the_drain_stops_gives_its_job_back_fenced_by_its_attempt(state):
    job_id = add_slow_job(state)  # 50 words, 50 ms each: 2.5 s, far past the 0.4 s window
    run = execute_in_thread(state, job_id)
    t0 = time.monotonic()
    state.drain.begin()
    run["thread"].join(5)
    took = time.monotonic() - t0

    # The task raises Celery's Reject(requeue=True): its message goes back on the queue.
    assert isinstance(run.get("raised"), Reject) and run["raised"].requeue, run
    assert took < state.settings.drain_s + 0.5, took
    job = row(state, job_id)
    assert (job.status, job.attempts, job.lease_expires_at, job.worker_id, job.output) == \
        ("queued", 1, None, None, None)
    assert job.published_at is not None  # its message is back: nothing to republish
    types = [t for t, _ in stream(state, job_id)]
    assert types[0] == "status" and "token" in types and "done" not in types
    assert stream(state, job_id)[-1] == (
        "status", {"status": "queued", "requeued": True, "reason": "worker shutting down"})
    assert state.drain.done.wait(2)

    # The released attempt can write nothing more; the next claim is attempt 2.
    assert state.store.finish(job_id, attempt=1, to=S.SUCCEEDED, output={"text": "x"}) is None
    assert state.store.release(job_id, attempt=1, reason="again") is False
    claimed = state.store.claim(job_id, worker_id="other")
    assert claimed is not None and claimed.attempts == 2
    assert state.store.release(job_id, attempt=1, reason="late") is False
    assert row(state, job_id).status == "running"


def test_a_task_that_starts_while_draining_hands_its_message_back_unrun(state):
    job_id = add_slow_job(state)
    state.drain.begin()
    with pytest.raises(Reject) as exc:
        lifecycle.execute(state, job_id)
    assert exc.value.requeue
    job = row(state, job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    assert stream(state, job_id) == []


def test_a_job_cancelled_before_the_drain_stopped_it_ends_cancelled(state):
    job_id = add_slow_job(state)
    run = execute_in_thread(state, job_id)
    with state.sessions() as s:  # what the API's cancel does to a running job
        s.execute(transition(job_id, S.CANCELLING))
        s.commit()
    state.drain.begin()
    run["thread"].join(5)
    assert run.get("returned"), run  # nothing to requeue: the message is acknowledged
    job = row(state, job_id)
    assert (job.status, job.attempts) == ("cancelled", 1)


# Worker processes ------------------------------------------------------------------------

def statuses(stack, job_id: str) -> list[tuple[int, dict]]:
    """(stream time in ms, data) of the job's status events."""
    r = redis.Redis.from_url(stack.redis_url)
    out = []
    for entry_id, fields in r.xrange(events_key(job_id)):
        t, data = decode(fields)
        if t == "status":
            out.append((int(entry_id.decode().split("-")[0]), data))
    return out


def sigterm(proc) -> float:
    """Seconds from SIGTERM to the process's exit."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    return time.monotonic() - t0


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_sigterm_finishes_what_fits_hands_back_the_rest_and_exits_0(make_stack, db):
    stack = make_stack(db, env={"MONKEY_DRAIN_S": str(DRAIN_S)})
    first = stack.start_worker("llm", concurrency=3)
    short = stack.submit(input={"prompt": words(10, "s")}, params={"delay_ms": 200})  # 2 s
    longs = [stack.submit(input={"prompt": words(100, f"l{i}-")}, params={"delay_ms": 100})
             for i in range(2)]  # 10 s each: more than the window
    for job in (short, *longs):
        stack.wait(job["id"], until={"running"}, timeout=10)

    exit_s = sigterm(first)
    after_exit = {j["id"]: stack.get(j["id"]) for j in (short, *longs)}
    r = redis.Redis.from_url(stack.redis_url)
    unacked, waiting = r.hlen("unacked"), r.llen("llm")

    assert first.returncode == 0, stack.logs()
    assert exit_s < DRAIN_S, exit_s
    assert after_exit[short["id"]]["status"] == "succeeded"
    assert after_exit[short["id"]]["output"]["text"] == short["input"]["prompt"]
    for job in longs:  # back in the queue by the time the worker is gone
        assert (after_exit[job["id"]]["status"], after_exit[job["id"]]["attempts"]) == \
            ("queued", 1)
    # Their messages are on the queue, not held in kombu's unacked hash until the
    # visibility timeout: a new worker takes them at once.
    assert (unacked, waiting) == (0, 2)

    t0 = time.monotonic()
    stack.start_worker("llm", concurrency=3)
    for job in longs:
        stack.wait(job["id"], until={"running", "succeeded"}, timeout=10)
    restart_s = time.monotonic() - t0
    assert restart_s < 10, restart_s  # the new worker's start, not a lease or a timeout

    engine = create_engine(stack.settings.sync_database_url)
    for job in longs:
        done = stack.wait(job["id"], timeout=30)
        assert (done["status"], done["attempts"]) == ("succeeded", 2)
        assert done["output"]["text"] == job["input"]["prompt"]  # whole, once
        seen = [d for _, d in statuses(stack, job["id"])]
        assert seen == [
            {"status": "running", "attempt": 1},
            {"status": "queued", "requeued": True, "reason": "worker shutting down"},
            {"status": "running", "attempt": 2, "restarted": True},
            {"status": "succeeded"},
        ]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT status, attempts FROM jobs WHERE id = :id"),
                                {"id": job["id"]}).all()
        assert rows == [("succeeded", 2)]
    engine.dispose()
    print(f"\nsigterm to exit: {exit_s:.2f}s (MONKEY_DRAIN_S={DRAIN_S:g})")


def test_a_handed_back_job_runs_on_another_worker_within_a_second(make_stack):
    stack = make_stack("postgres", env={"MONKEY_DRAIN_S": str(DRAIN_S)})
    first = stack.start_worker("llm", concurrency=2)
    job = stack.submit(input={"prompt": words(200)}, params={"delay_ms": 100})  # 20 s
    stack.wait(job["id"], until={"running"}, timeout=10)
    stack.start_worker("llm", concurrency=2)  # idle: nothing else is queued

    signalled_ms = time.time() * 1000
    exit_s = sigterm(first)
    done = stack.wait(job["id"], until={"running"}, timeout=10)
    assert first.returncode == 0 and exit_s < DRAIN_S, (first.returncode, exit_s)
    assert done["attempts"] == 2

    # The row says running first; its `running` event follows within the event
    # writer's coalescing window.
    wait_until(lambda: len(statuses(stack, job["id"])) >= 3, 5, "the second running event")
    seen = statuses(stack, job["id"])
    (queued_ms, queued), (running_ms, running) = seen[1], seen[2]
    assert queued["status"] == "queued" and running["status"] == "running"
    handed_back_s = (queued_ms - signalled_ms) / 1000
    handoff_ms = running_ms - queued_ms
    # Handed back once the window's finishing part is over, and taken by the idle
    # worker in a blink: no lease, no visibility timeout in between.
    assert handed_back_s < DRAIN_S, handed_back_s
    assert handoff_ms < 1000, handoff_ms
    print(f"\nsigterm to exit {exit_s:.2f}s, to handed back {handed_back_s:.2f}s, "
          f"handed back to running elsewhere {handoff_ms} ms")
