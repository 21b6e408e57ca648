"""Batch lines in chunks, end to end (API, control process, llm workers, real Redis and
Postgres): a worker SIGKILLed in the middle of a chunk, and a batch cancelled in the
middle of its chunks. Every line is answered once, with its own result."""

from __future__ import annotations

import time

import redis
from sqlalchemy import select

from common.constants import BROKER_EPOCH
from common.db import Job, make_sync_engine
from common.events import decode, events_key
from tests.api.test_batches import chat_line, read_lines, sdk, start_batch, wait_batch
from tests.chaos.test_lost_messages import messages, sweeps, wait_marked
from tests.conftest import wait_until

LINES = 40
CHUNK = {"MONKEY_BATCH_CHUNK_LINES": "10"}


def prompt(i: int) -> str:
    return f"line {i} a b"


def jobs(stack, batch_id: str) -> dict[str, Job]:
    engine = make_sync_engine(stack.settings)
    try:
        with engine.connect() as c:
            return {r.custom_id: r for r in c.execute(
                select(Job.id, Job.custom_id, Job.status, Job.attempts, Job.finished_at,
                       Job.output).where(Job.batch_id == batch_id))}
    finally:
        engine.dispose()


def test_a_worker_killed_mid_chunk_leaves_every_line_succeeded_once(make_stack):
    stack = make_stack("postgres", env=CHUNK)
    worker = stack.start_worker("llm", concurrency=2)
    client = sdk(stack)
    # 4 words at 80 ms: a line takes about 0.3 s, a chunk of 10 about 3 s.
    lines = [chat_line(f"r{i}", prompt(i), delay_ms=80) for i in range(LINES)]
    batch = start_batch(client, lines)

    def mid_chunk() -> bool:
        now = jobs(stack, batch.id).values()
        return (sum(j.status == "succeeded" for j in now) >= 3
                and sum(j.status == "running" for j in now) >= 3)

    wait_until(mid_chunk, 60, "a chunk half done")
    stack.kill(worker)
    before = {cid: j for cid, j in jobs(stack, batch.id).items() if j.status == "succeeded"}
    stranded = [cid for cid, j in jobs(stack, batch.id).items() if j.status == "running"]
    assert before and stranded
    stack.start_worker("llm", concurrency=2)
    done = wait_batch(client, batch.id, timeout=120)
    assert done.status == "completed" and done.request_counts.completed == LINES
    out = read_lines(client, done.output_file_id)
    assert [x["custom_id"] for x in out] == [f"r{i}" for i in range(LINES)]
    for i, x in enumerate(out):
        assert x["response"]["body"]["choices"][0]["message"]["content"] == prompt(i)
    after = jobs(stack, batch.id)
    # Lines finished before the kill were written once and never again; the lines the
    # dead worker held ran again, as a second attempt.
    for cid, j in before.items():
        assert (after[cid].attempts, after[cid].finished_at) == (1, j.finished_at)
    assert all(after[cid].attempts == 2 for cid in stranded)
    r = redis.Redis.from_url(stack.redis_url)
    for j in after.values():
        kinds = [decode(f)[0] for _, f in r.xrange(events_key(j.id))]
        assert kinds.count("done") <= 1, kinds


def test_a_batch_cancelled_mid_chunk_stops_within_the_chunk(make_stack):
    stack = make_stack("postgres", env=CHUNK)
    stack.start_worker("llm", concurrency=2)
    client = sdk(stack)
    lines = [chat_line(f"r{i}", prompt(i), delay_ms=80) for i in range(LINES)]
    batch = start_batch(client, lines)

    def succeeded() -> int:
        return sum(j.status == "succeeded" for j in jobs(stack, batch.id).values())

    wait_until(lambda: succeeded() >= 3, 60, "some lines done")
    at_cancel = succeeded()
    t0 = time.monotonic()
    client.batches.cancel(batch.id)
    done = wait_batch(client, batch.id, timeout=60)
    stopped_in = time.monotonic() - t0
    assert done.status == "cancelled"
    out = read_lines(client, done.output_file_id)
    err = read_lines(client, done.error_file_id)
    # The two running chunks stopped at once: at most the line each thread was on
    # (and one not yet written) finished after the cancel, not the rest of the chunk.
    assert at_cancel <= len(out) <= at_cancel + 4, (at_cancel, len(out))
    assert stopped_in < 10
    assert sorted(x["custom_id"] for x in out + err) == sorted(f"r{i}" for i in range(LINES))
    assert {x["error"]["code"] for x in err} == {"batch_cancelled"}
    for x in out:
        i = int(x["custom_id"][1:])
        assert x["response"]["body"]["choices"][0]["message"]["content"] == prompt(i)


def test_a_backlog_of_chunks_is_not_taken_for_lost(make_stack):
    """A batch's chunks waiting with no worker, and the reconciler's epoch marker gone
    (as after a Redis restart): the lost-message sweeps read every line inside the
    chunks, so nothing is published again, and a worker then runs each line once."""
    stack = make_stack("postgres", env=CHUNK)
    client = sdk(stack)
    batch = start_batch(client, [chat_line(f"r{i}", prompt(i)) for i in range(LINES)])
    r = redis.Redis.from_url(stack.redis_url)
    wait_until(lambda: messages(r) == LINES // 10, 30, "the chunks on the broker")
    wait_marked(stack, LINES)
    before = len(sweeps(stack))  # the first pass on the fresh Redis swept too

    def losses() -> list[dict]:
        return [s for s in sweeps(stack)[before:] if s["reason"] == "loss"]

    r.delete(BROKER_EPOCH)
    wait_until(lambda: len(losses()) >= 2, 30, "two sweeps after the loss")
    # Each read the chunks' messages and found every line in them.
    assert [(s["read"], s["queued"], s["missing"]) for s in losses()[:2]] == \
        [(LINES // 10, LINES, 0)] * 2
    assert messages(r) == LINES // 10  # nothing sent again
    assert not any(s["unmarked"] for s in sweeps(stack))
    stack.start_worker("llm", concurrency=2)
    done = wait_batch(client, batch.id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == LINES
    assert {j.attempts for j in jobs(stack, batch.id).values()} == {1}
