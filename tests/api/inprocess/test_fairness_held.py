"""Jobs held back for fair share between keys, in-process (api/services/fair.py,
fair_release.py): the submit past a key's interactive window, the release pass with a
stub broker, and the reconciler's recovery leaving held jobs alone. End to end:
tests/api/test_fairness.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from api.reconciler import Reconciler
from api.recovery import LostMessages
from api.services.batch_fair import wait_turn
from api.services.fair_release import Releaser, interleave
from common.batches_db import Batch
from common.db import ApiKey, Job, utcnow
from common.ids import new_id


@pytest.fixture
def app(empty_app):
    return empty_app


def _held(n: int, owner: str, priority: str = "interactive", batch_id: str | None = None
          ) -> list[dict]:
    old = utcnow() - timedelta(seconds=60)
    return [{"id": new_id("job"), "owner_id": owner, "kind": "generate",
             "model": "debug/echo", "queue": "llm", "status": "queued", "priority": priority,
             "input": {"prompt": "hi"}, "params": {}, "created_at": old, "held_at": old,
             "published_at": None, "batch_id": batch_id} for _ in range(n)]


async def _put(state, rows: list[dict]) -> None:
    async with state.sessions() as s:
        await s.execute(insert(Job), rows)
        await s.commit()


async def _jobs(state, ids: list[str]) -> dict[str, Job]:
    async with state.sessions() as s:
        return {j.id: j for j in (await s.scalars(select(Job).where(Job.id.in_(ids))))}


def _with(state, **settings):
    """The app's state with other settings (the release reads them from the state)."""
    return dataclasses.replace(state, settings=state.settings.model_copy(update=settings))


def test_a_submit_past_the_keys_window_is_held_and_sends_nothing(app):
    window = app.state.settings.interactive_window
    ids = [app.client.post("/v1/jobs", json={"model": "debug/echo", "input": {"prompt": "x"}}
                           ).json()["id"] for _ in range(window + 5)]
    sent = {m.job_id for m in app.stub.take()}
    jobs = app.client.portal.call(_jobs, app.state, ids)
    held = {i for i, j in jobs.items() if j.held_at is not None}
    assert sent == set(ids) - held and len(sent) == window
    assert held == set(ids[window:])  # the last ones, all queued
    assert {jobs[i].status for i in held} == {"queued"}


def test_held_jobs_are_not_lost_and_not_published_by_the_reconciler(app):
    state = app.state
    rows = _held(40, "key_a")
    app.client.portal.call(_put, state, rows)
    lost = LostMessages(state)

    async def look() -> tuple[int, int, int]:
        short = await lost.census()
        lost.start_sweep()
        unmarked = 0
        while True:
            unmarked += await lost.tick()
            if lost.sweep is None:
                break
        return short, unmarked, await Reconciler(state)._publish_pending()

    short, unmarked, published = app.client.portal.call(look)
    assert short <= 0 and unmarked == 0 and published == 0
    assert app.stub.take() == []


def test_the_release_fills_a_keys_window_oldest_first(app):
    state = _with(app.state, interactive_window=10)
    rows = sorted(_held(25, "key_a"), key=lambda r: r["id"])
    app.client.portal.call(_put, state, rows)
    assert app.client.portal.call(Releaser(state).release) == 10
    sent = [m.job_id for m in app.stub.take()]
    assert sent == [r["id"] for r in rows[:10]]
    jobs = app.client.portal.call(_jobs, state, sent)
    assert all(j.held_at is None and j.published_at is not None for j in jobs.values())
    # Nothing started: the window is full, nothing more goes out.
    assert app.client.portal.call(Releaser(state).release) == 0


def test_a_release_the_broker_refuses_is_left_to_the_reconciler(app):
    state = _with(app.state, interactive_window=10)
    rows = _held(5, "key_a")
    app.client.portal.call(_put, state, rows)
    app.stub.broker_down = True
    assert app.client.portal.call(Releaser(state).release) == 5
    jobs = app.client.portal.call(_jobs, state, [r["id"] for r in rows])
    assert all(j.held_at is None and j.published_at is None for j in jobs.values())
    app.stub.broker_down = False
    assert app.client.portal.call(Reconciler(state)._publish_pending) == 5
    assert {m.job_id for m in app.stub.take()} == set(jobs)


def test_batch_lines_of_busy_keys_go_out_interleaved_by_weight(app):
    state = _with(app.state, batch_window=80, batch_chunk_lines=4)

    async def keys() -> None:
        async with state.sessions() as s:
            for name, weight in (("key_light", 1.0), ("key_heavy", 3.0)):
                s.add(ApiKey(id=name, name=name, key_hash=new_id("h"), prefix="mk-",
                             weight=weight))
            await s.commit()

    app.client.portal.call(keys)
    light = _held(200, "key_light", "batch", "batch_l")
    app.client.portal.call(_put, state, light + _held(200, "key_heavy", "batch", "batch_h"))
    assert app.client.portal.call(Releaser(state).release) == 80
    msgs = app.stub.take()
    light_ids = {r["id"] for r in light}
    order = ["light" if m.job_id in light_ids else "heavy" for m in msgs]
    lines: Counter[str] = Counter()
    for m, key in zip(msgs, order, strict=True):
        assert len(m.job_ids) == 4  # whole chunks
        lines[key] += len(m.job_ids)
    assert lines == {"light": 20, "heavy": 60}
    # Interleaved: in every stretch of four messages, each key has one at least.
    assert all({"light", "heavy"} <= set(order[i:i + 4]) for i in range(len(order) - 3))


def test_a_batch_enqueues_its_next_lines_while_a_window_waits_on_the_broker(app):
    """The batch engine keeps up to two windows of a key's lines queued: held ones are
    at hand when the workers make room, and past two windows it waits its turn."""
    state = _with(app.state, batch_window=40)
    batch = Batch(id="batch_turn", owner_id="key_turn")

    async def turn() -> int:
        return await asyncio.wait_for(wait_turn(state, batch, "token", 100), timeout=0.5)

    on_broker = _held(40, "key_turn", "batch", batch.id)
    for row in on_broker:
        row["held_at"], row["published_at"] = None, utcnow()
    app.client.portal.call(_put, state, on_broker)
    assert app.client.portal.call(turn) == 40  # a window on the broker: one more held
    app.client.portal.call(_put, state, _held(40, "key_turn", "batch", batch.id))
    with pytest.raises(TimeoutError):
        app.client.portal.call(turn)


def test_a_key_that_emptied_its_held_lines_gets_no_more_than_the_room(app):
    """A release takes all of a key's held lines, less than its share of the room: it
    keeps no credit for later, and the next release fills only what is left of the
    window."""
    state = _with(app.state, batch_window=80, batch_chunk_lines=4)
    releaser = Releaser(state)
    app.client.portal.call(_put, state, _held(40, "key_room", "batch", "batch_room"))
    assert app.client.portal.call(releaser.release) == 40
    app.stub.take()
    app.client.portal.call(_put, state, _held(80, "key_room", "batch", "batch_room"))
    assert app.client.portal.call(releaser.release) == 40  # 80 - the 40 on the broker


def test_interleave_orders_messages_by_weight():
    rows = {"a": [{"id": f"a{i}", "kind": "generate", "model": "openai/x", "queue": "llm",
                   "priority": "batch", "attempts": 0, "batch_id": "b1"} for i in range(4)],
            "b": [{"id": f"b{i}", "kind": "generate", "model": "openai/x", "queue": "llm",
                   "priority": "batch", "attempts": 0, "batch_id": "b2"} for i in range(8)]}
    order = [m.job_id[0] for m in interleave(rows, {"a": 1.0, "b": 2.0}, 64)]
    # Virtual finish times: b's messages at 0.5, 1, 1.5, ..., a's at 1, 2, 3, 4.
    assert order == ["b", "a", "b", "b", "a", "b", "b", "a", "b", "b", "a", "b"]


def test_jobs_released_by_a_process_that_died_before_publishing_go_out_again(app):
    # The release commits them published, then publishes: a crash in between leaves
    # published-looking jobs with no message, for the lost-message recovery.
    state = _with(app.state, interactive_window=10)
    rows = _held(4, "key_a")
    app.client.portal.call(_put, state, rows)
    releaser = Releaser(state)
    unheld = app.client.portal.call(releaser._unhold, "key_a", "interactive", 10)
    assert len(unheld) == 4 and app.stub.take() == []

    async def recover() -> int:
        async with state.sessions() as s:  # as if sent longer ago than MONKEY_LOST_AFTER_S
            await s.execute(update(Job).values(
                published_at=utcnow() - timedelta(seconds=state.settings.lost_after_s + 1)))
            await s.commit()
        lost = LostMessages(state)
        lost.start_sweep()
        while lost.sweep is not None or not lost.last:
            await lost.tick()
        return await Reconciler(state)._publish_pending()

    assert app.client.portal.call(recover) == 4
    assert {m.job_id for m in app.stub.take()} == {r["id"] for r in rows}


def test_a_keys_weight_scales_its_windows():
    from api.services.fair import scaled

    assert [scaled(100, w, 0) for w in (1, 2, 0.5, 0.001)] == [100, 200, 50, 1]
    assert scaled(100, 2, 30) == 30  # never past the cap of running jobs
    assert scaled(0, 2, 30) == 0  # off stays off
