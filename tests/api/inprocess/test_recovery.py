"""Lost task messages in-process (api/recovery.py): jobs written straight to the
database, their messages pushed onto Redis as the API's fast path writes them, and
the sweep driven tick by tick. The same end to end, with a worker, is
tests/chaos/test_lost_messages.py."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from api.reconciler import Reconciler
from api.recovery import CONFIRM_TICKS, LostMessages
from common.compat.kombu_redis import UNACKED_HASH, UNACKED_INDEX
from common.constants import BROKER_EPOCH, HELD_KEY, WORKER_KEY
from common.db import Job, utcnow
from common.ids import new_id
from common.producer import TaskMessage
from common.producer.wire import TaskWire

WIRE = TaskWire()


@pytest.fixture
def app(empty_app):
    """The module's app with no job in its database and nothing in its Redis."""
    return empty_app


def _rows(n: int, *, age_s: float, priority: str = "batch") -> list[dict]:
    published = utcnow() - timedelta(seconds=age_s)
    return [{"id": new_id("job"), "owner_id": "key_test", "kind": "generate",
             "model": "debug/echo", "queue": "llm", "status": "queued", "priority": priority,
             "input": {"prompt": "hi"}, "params": {}, "created_at": published,
             "published_at": published} for _ in range(n)]


def _message(row: dict) -> tuple[str, bytes]:
    (_cmd, key, payload), _event = WIRE.publish_commands(TaskMessage.of_row(row))
    return key, payload


async def _put(state, rows: list[dict], *, messages: bool = True) -> None:
    async with state.sessions() as s:
        for i in range(0, len(rows), 1000):
            await s.execute(insert(Job), rows[i:i + 1000])
        await s.commit()
    if messages:
        pipe = state.redis.pipeline(transaction=False)
        for row in rows:
            pipe.lpush(*_message(row))
        await pipe.execute()


async def _put_bare(state, rows: list[dict]) -> None:
    """Jobs marked published whose messages are nowhere."""
    await _put(state, rows, messages=False)


async def _unpublished(state) -> set[str]:
    async with state.sessions() as s:
        return set((await s.execute(select(Job.id).where(
            Job.status == "queued", Job.published_at.is_(None)))).scalars())


async def _sweep(lost: LostMessages, *, between=None) -> int:
    lost.start_sweep()
    unmarked = 0
    while True:
        unmarked += await lost.tick()
        if lost.sweep is None:
            return unmarked
        if between is not None:
            await between()


def test_a_deep_healthy_backlog_is_read_in_slices_and_left_alone(app):
    state = app.state
    rows = _rows(5000, age_s=60) + _rows(50, age_s=60, priority="interactive")
    app.client.portal.call(_put, state, rows)
    lost = LostMessages(state)

    async def census_then_sweep() -> tuple[int, float, int]:
        t0 = time.perf_counter()
        short = await lost.census()
        census_ms = (time.perf_counter() - t0) * 1000
        return short, census_ms, await _sweep(lost)

    short, census_ms, unmarked = app.client.portal.call(census_then_sweep)
    assert short <= 0  # as many messages as jobs: no reason to sweep
    assert unmarked == 0 and app.client.portal.call(_unpublished, state) == set()
    assert lost.last["read"] == 5050 and lost.last["missing"] == 0
    assert lost.last["ticks"] == 3  # 2,000 messages a tick
    print(json.dumps({"backlog": 5050, "census_ms": round(census_ms, 1), **lost.last}))


def test_jobs_whose_message_is_nowhere_go_out_again_once_past_the_threshold(app):
    state = app.state
    kept, gone = _rows(20, age_s=60), _rows(3, age_s=60)
    young = _rows(2, age_s=0)  # within MONKEY_LOST_AFTER_S: maybe still on its way
    unacked, held = _rows(1, age_s=60), _rows(1, age_s=60)
    app.client.portal.call(_put, state, kept)
    app.client.portal.call(_put_bare, state, gone + young + unacked + held)

    async def account_for_some() -> None:
        r = state.redis
        # A worker received this one (kombu's unacked entry: [message, exchange, rk])...
        payload = json.loads(_message(unacked[0])[1])
        await r.hset(UNACKED_HASH, "tag-1", json.dumps([payload, "", "llm"]))
        await r.zadd(UNACKED_INDEX, {"tag-1": time.time()})
        # ...and a live worker holds this one.
        await r.sadd(HELD_KEY.format(worker_id="w1"), held[0]["id"])
        await r.hset(WORKER_KEY.format(worker_id="w1"), "ready", "1")

    app.client.portal.call(account_for_some)
    lost = LostMessages(state)
    assert app.client.portal.call(_sweep, lost) == 3
    assert app.client.portal.call(_unpublished, state) == {r["id"] for r in gone}
    assert lost.last["missing"] == 5  # the young two wait for the threshold...
    assert lost._recheck_at is not None  # ...and are looked for again then
    assert 0 < lost._recheck_at - time.monotonic() <= state.settings.lost_after_s


def test_messages_that_move_while_a_sweep_reads_are_not_missed(app):
    """Between slices new messages are pushed at one end and workers take messages at
    the other (into unacked): the sweep, walking from the pushing end, misses none."""
    state = app.state
    rows = _rows(300, age_s=60)
    app.client.portal.call(_put, state, rows)
    lost = LostMessages(state)
    lost.slice = 25
    taken = 0

    async def traffic() -> None:
        nonlocal taken
        r = state.redis
        await _put(state, _rows(10, age_s=0))  # published after the sweep began
        for _ in range(10):
            raw = await r.rpop("llm\x06\x169")
            taken += 1
            entry = json.dumps([json.loads(raw), "", "llm"])
            await r.hset(UNACKED_HASH, f"tag-{taken}", entry)

    assert app.client.portal.call(lambda: _sweep(lost, between=traffic)) == 0
    assert lost.last["ticks"] > 10 and lost.last["missing"] == 0


def test_a_short_census_starts_a_sweep_after_it_repeats(app):
    state = app.state
    app.client.portal.call(_put, state, _rows(5, age_s=60))
    app.client.portal.call(_put_bare, state, _rows(2, age_s=60))
    lost = LostMessages(state)
    assert app.client.portal.call(lost.census) == 2
    for _ in range(CONFIRM_TICKS - 1):
        assert app.client.portal.call(lost.tick) == 0 and lost.sweep is None
    assert app.client.portal.call(lost.tick) == 2  # one slice reads all 5: done


def test_a_fresh_redis_gets_only_the_messages_it_lacks(app):
    """No epoch marker (a first deploy, or Redis lost its data): the jobs whose message
    Redis has are not sent again; those it lacks are, on the first pass."""
    state = app.state
    on_broker, lost_ones = _rows(30, age_s=5), _rows(4, age_s=5)
    app.client.portal.call(_put, state, on_broker)
    app.client.portal.call(_put_bare, state, lost_ones)

    async def forget_marker() -> None:
        await state.redis.delete(BROKER_EPOCH)

    app.client.portal.call(forget_marker)
    app.stub.take()
    reconciler = Reconciler(state)
    try:
        counts = app.client.portal.call(reconciler.tick)
        assert counts["epoch"] == 1 and counts["lost"] == 4
        assert sorted(m.job_id for m in app.stub.take()) == sorted(r["id"] for r in lost_ones)
        # Later passes (sweeps go on for a while after a loss) send nothing more.
        app.client.portal.call(reconciler.tick)
        assert app.stub.take() == []
    finally:
        app.client.portal.call(reconciler.stop)


def test_running_jobs_count_on_their_unacked_message(app):
    """A running job's message stays unacked until its task returns: the census counts
    it on both sides."""
    state = app.state
    rows = _rows(3, age_s=60)
    app.client.portal.call(_put_bare, state, rows)

    async def run_them() -> None:
        async with state.sessions() as s:
            await s.execute(update(Job).values(status="running", attempts=1))
            await s.commit()
        for i, row in enumerate(rows):
            payload = json.loads(_message(row)[1])
            await state.redis.hset(UNACKED_HASH, f"tag-{i}", json.dumps([payload, "", "llm"]))

    app.client.portal.call(run_them)
    assert app.client.portal.call(LostMessages(state).census) == 0


@pytest.mark.parametrize("trigger", ["scan", "death"])
def test_a_loss_that_a_duplicate_hides_from_the_census_is_still_found(app, trigger):
    """A job's message twice on the list and another job's message gone: the counts
    agree, so the lost one is found by the sweep every MONKEY_LOST_SCAN_S, or by the
    one that a worker's death (a lapsed lease) starts."""
    state = app.state
    twice, gone = _rows(1, age_s=60), _rows(1, age_s=60)
    app.client.portal.call(_put, state, twice)
    app.client.portal.call(_put_bare, state, gone)

    async def duplicate() -> None:
        await state.redis.lpush(*_message(twice[0]))

    app.client.portal.call(duplicate)
    lost = LostMessages(state)
    assert app.client.portal.call(lost.census) == 0
    for _ in range(CONFIRM_TICKS + 1):
        assert app.client.portal.call(lost.tick) == 0
    if trigger == "scan":
        lost.scan_s = 0.0  # the scan is due
    else:
        lost.worker_died()
    assert app.client.portal.call(lost.tick) == 1
    assert lost.last["reason"] == trigger
    assert app.client.portal.call(_unpublished, state) == {gone[0]["id"]}


def test_a_lapsed_lease_makes_the_reconciler_sweep(app):
    """A worker that died may have taken a message with it between its BRPOP and its
    unacked write: the pass that requeues its job starts a sweep."""
    state = app.state
    dead = _rows(1, age_s=60)
    dead[0].update(status="running", attempts=1, lease_expires_at=utcnow() - timedelta(1))
    app.client.portal.call(_put_bare, state, dead)
    reconciler = Reconciler(state)
    try:
        assert app.client.portal.call(reconciler.tick)["requeued"] == 1
        app.client.portal.call(reconciler.tick)
        assert reconciler.lost.last["reason"] == "death"
    finally:
        app.client.portal.call(reconciler.stop)


def test_a_backlog_of_chunks_is_not_short(app):
    """Batch lines that share a message (chunks) count as the messages that carry
    them: a healthy backlog of chunks does not look short (each tick would sweep), and
    a chunk that vanished does."""
    state = app.state
    size = state.settings.batch_chunk_lines
    rows = _rows(3 * size, age_s=60)
    for row in rows:
        row["batch_id"] = "batch_test"
    app.client.portal.call(_put_bare, state, rows)
    chunks = [TaskMessage.chunk(rows[i:i + size]) for i in range(0, len(rows), size)]

    async def push(messages) -> None:
        for msg in messages:
            (_cmd, key, payload), _event = WIRE.publish_commands(msg)
            await state.redis.lpush(key, payload)

    app.client.portal.call(push, chunks[:2])
    assert app.client.portal.call(LostMessages(state).census) == 1  # one chunk missing
    app.client.portal.call(push, chunks[2:])
    assert app.client.portal.call(LostMessages(state).census) == 0
