"""A chunk of batch lines on a worker, driven directly (no Celery): one claim for the
chunk, results equal to the same lines run one by one, no token events, a duplicate
delivery that writes nothing, the attempt fence per line, and a cancel that stops the
lines not started yet."""

from __future__ import annotations

import threading

import pytest
import redis
from celery.exceptions import Reject
from sqlalchemy import select

from common.db import Job, utcnow
from common.events import decode, events_key
from common.ids import new_id
from common.jobs import JobStatus, transition
from tests.conftest import fresh_redis_url, migrated, wait_until, worker_on
from workers import chunks, lifecycle
from workers.worker import Worker

S = JobStatus


@pytest.fixture(params=["sqlite", "postgres"])
def state(request, tmp_path, redis_base):
    with migrated(request.param, tmp_path, fresh_redis_url(redis_base)) as settings, \
            worker_on(settings) as worker:
        yield worker


def add_lines(state: Worker, prompts: list[str], **params) -> list[str]:
    ids = [new_id("job") for _ in prompts]
    with state.sessions() as s:
        s.add_all([Job(id=i, owner_id="key_x", kind="generate", model="debug/echo",
                       queue="llm", status="queued", priority="batch",
                       input={"prompt": p}, params=dict(params), metadata_={}, metrics={},
                       attempts=0, created_at=utcnow(), batch_id="batch_x", custom_id=f"c{n}")
                   for n, (i, p) in enumerate(zip(ids, prompts, strict=True))])
        s.commit()
    return ids


def rows(state: Worker, ids: list[str]) -> list[Job]:
    with state.sessions() as s:
        found = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(ids)))}
    return [found[i] for i in ids]


def types(state: Worker, job_id: str) -> list[str]:
    r = redis.Redis.from_url(state.settings.redis_url)
    return [decode(f)[0] for _, f in r.xrange(events_key(job_id))]


def start_chunk(state: Worker, ids: list[str], until) -> threading.Thread:
    """Run the chunk on a thread of its own, as a task thread would, until `until()`."""
    worker = threading.Thread(target=chunks.execute, args=(state, ids))
    worker.start()
    wait_until(until, 20, "the chunk under way")
    return worker


def test_chunked_lines_end_as_the_same_lines_run_one_by_one(state):
    prompts = [f"line {i} says hello" for i in range(10)] + ["cut here please"]
    chunked = add_lines(state, prompts, stop=["here"])
    single = add_lines(state, prompts, stop=["here"])
    chunks.execute(state, chunked)
    for job_id in single:
        lifecycle.execute(state, job_id)
    state.events.close()
    for a, b in zip(rows(state, chunked), rows(state, single), strict=True):
        assert a.status == b.status == S.SUCCEEDED
        assert a.output == b.output and a.attempts == b.attempts == 1
        assert a.custom_id == b.custom_id and a.error is None
        assert a.metrics["completion_tokens"] == b.metrics["completion_tokens"]
    assert rows(state, chunked)[-1].output["text"] == "cut "
    # Nobody follows a chunk's line live: no token events, only its end.
    assert types(state, chunked[0]) == ["status", "done"]
    assert "token" in types(state, single[0])


def test_a_chunk_delivered_twice_writes_each_line_once(state):
    ids = add_lines(state, [f"line {i}" for i in range(6)])
    chunks.execute(state, ids)
    first = rows(state, ids)
    chunks.execute(state, ids)  # the duplicate: claims nothing, writes nothing
    state.events.close()
    again = rows(state, ids)
    assert [(j.status, j.attempts, j.finished_at, j.output) for j in again] == \
        [(j.status, j.attempts, j.finished_at, j.output) for j in first]
    assert all(types(state, i) == ["status", "done"] for i in ids)


def test_a_line_requeued_mid_chunk_is_left_to_its_new_attempt(state):
    ids = add_lines(state, ["a b c d e f"] * 3, delay_ms=40)
    # The reconciler takes the last line away while the chunk runs the first (its
    # lease lapsed, say), and another worker finishes it as attempt 2.
    worker = start_chunk(state, ids, lambda: rows(state, ids)[2].status == S.RUNNING)
    with state.sessions() as s:
        s.execute(transition(ids[2], S.QUEUED, attempt=1, lease_expires_at=None))
        s.commit()
    lifecycle.execute(state, ids[2])
    worker.join(30)
    final = rows(state, ids)
    assert [j.status for j in final] == [S.SUCCEEDED] * 3
    assert [j.attempts for j in final] == [1, 1, 2]
    assert final[2].worker_id == state.worker_id and final[2].output["text"] == "a b c d e f"
    state.events.close()
    assert types(state, ids[2]).count("done") == 1


def test_a_cancel_stops_the_lines_not_started_yet(state):
    ids = add_lines(state, ["a b c"] * 8, delay_ms=50)
    worker = start_chunk(state, ids, lambda: rows(state, ids)[1].status == S.SUCCEEDED)
    # What a batch's cancel does to its running lines (AsyncJobStore.cancel_batch_lines):
    # cancelling in the database, and a message on the cancel channel.
    with state.sessions() as s:
        s.execute(transition(None, S.CANCELLING, where=[Job.id.in_(ids)]))
        s.commit()
    for job_id in ids:
        state.supervisor._on_cancel(job_id)
    worker.join(10)
    assert not worker.is_alive()
    final = rows(state, ids)
    done = [j for j in final if j.status == S.SUCCEEDED]
    assert 2 <= len(done) <= 3, [j.status for j in final]
    assert all(j.output["text"] == "a b c" for j in done)
    rest = final[len(done):]
    assert rest and all(j.status == S.CANCELLED for j in rest)
    assert all(j.finished_at is not None and j.lease_expires_at is None for j in rest)


def test_lines_that_end_before_a_slow_one_are_written_while_it_runs(state):
    fast = add_lines(state, ["a b", "c d", "e f"])
    slow = add_lines(state, [" ".join(f"w{i}" for i in range(40))], delay_ms=100)  # 4 s
    ids = fast + slow
    worker = start_chunk(state, ids, lambda: rows(state, slow)[0].status == S.RUNNING)
    try:
        # Within the write window of their end (chunks.FLUSH_S), not at the slow line's.
        wait_until(lambda: all(j.status == S.SUCCEEDED for j in rows(state, fast)), 2,
                   "the fast lines written")
        assert rows(state, slow)[0].status == S.RUNNING
    finally:
        worker.join(20)
    assert [j.status for j in rows(state, ids)] == [S.SUCCEEDED] * 4
    assert rows(state, slow)[0].output["text"] == " ".join(f"w{i}" for i in range(40))


def test_the_heartbeat_renews_a_chunk_in_one_go_and_leaves_its_finished_lines(state):
    ids = add_lines(state, ["a b c"] * 6, delay_ms=50)
    worker = start_chunk(state, ids, lambda: rows(state, ids)[1].status == S.SUCCEEDED)
    running = state.runs.active()
    assert ids[0] not in {r.spec.id for r in running} and running
    leases = {j.id: j.lease_expires_at for j in rows(state, ids)}
    state.supervisor.beat()
    # Every line still to run keeps its lease, renewed; none is told it lost it.
    assert all(r.stop_reason() is None for r in running)
    renewed = {j.id: j.lease_expires_at for j in rows(state, ids)}
    assert all(renewed[r.spec.id] > leases[r.spec.id] for r in running
               if rows(state, [r.spec.id])[0].status == S.RUNNING)
    worker.join(30)
    assert [j.status for j in rows(state, ids)] == [S.SUCCEEDED] * 6


def test_a_draining_worker_hands_back_the_lines_it_did_not_finish(state):
    ids = add_lines(state, ["a b c d"] * 6, delay_ms=60)
    out: dict = {}

    def body() -> None:
        try:
            chunks.execute(state, ids)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["raised"] = exc

    worker = threading.Thread(target=body)
    worker.start()
    wait_until(lambda: rows(state, ids)[0].status == S.SUCCEEDED, 20, "a line done")
    state.drain.drain_s, state.drain.reserve_s = 0.3, 0.1  # a short window, then stop
    state.drain.begin()
    worker.join(10)
    # The chunk's message goes back on its queue with the lines not finished, released
    # (queued, fenced by their attempt); the finished lines keep their results.
    assert isinstance(out.get("raised"), Reject) and out["raised"].requeue, out
    final = rows(state, ids)
    done = [j for j in final if j.status == S.SUCCEEDED]
    back = [j for j in final if j.status == S.QUEUED]
    assert done and back and len(done) + len(back) == len(ids), [j.status for j in final]
    assert all(j.output["text"] == "a b c d" for j in done)
    assert all((j.attempts, j.lease_expires_at, j.output) == (1, None, None) for j in back)
    # Its next delivery (to a worker that is not draining) claims just those, again.
    assert state.drain.done.wait(5)
    state.drain.draining.clear()
    chunks.execute(state, ids)
    again = rows(state, ids)
    assert [j.status for j in again] == [S.SUCCEEDED] * len(ids)
    assert {j.id: j.attempts for j in again} == {
        j.id: 1 if j.status == S.SUCCEEDED else 2 for j in final}
