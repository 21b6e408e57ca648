"""The work behind a batch's statuses, idempotent and safe to resume in any API process.

- validate (validating -> in_progress | failed): every line checked, errors with their
  line numbers; nothing is written for a batch that fails.
- enqueue (in_progress): lines become jobs (priority `batch`) in chunks: one bulk insert
  per chunk, in the transaction that advances `lines_enqueued`, as the key's batch
  window has room (batch_fair). With the window on, the lines are written held and
  the leading control process publishes them (fair_release); with it off, one
  pipelined publish per chunk follows here. Either way lines that run in chunks on
  the worker go `MONKEY_BATCH_CHUNK_LINES` to a task message
  (batch_lines.task_messages). A crash resumes after the last committed chunk.
- results and finalize (batch_finalize): while lines run, the ones that ended go to the
  result files in line order (between parts, and while the last lines run); once no
  line is queued or running, the rest of the files and the final status.

Whoever works on a batch holds its claim (batch_claim), so a stale worker can never
overwrite a newer one. `start()` runs the work in the background of this process; the reconciler's
tick calls `advance_batches()`, which takes over batches whose claim lapsed (their API
process died) and finalizes the ones whose lines are all done.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, or_, select, update

from api.deps import Principal
from api.services import batch_fair, batch_lines
from api.services.batch_claim import ClaimLost, claim, claim_s, keep, load, release
from api.services.batch_finalize import Results, finalize
from api.services.files import iter_lines
from api.state import AppState
from common.batches_db import Batch
from common.db import Job, utcnow
from common.errors import BrokerUnavailable
from common.jobs import BATCH_WORKING, BatchStatus, JobStatus

log = logging.getLogger("monkey.batches")
S = JobStatus
B = BatchStatus

CHUNK = 500  # lines per insert transaction and per publish
_INSERT_JOBS = cast(Table, Job.__table__).insert()  # typed as a FromClause
ACTIVE_JOB = (S.QUEUED, S.RUNNING, S.CANCELLING)

_tasks: dict[str, asyncio.Task] = {}


def start(state: AppState, batch_id: str) -> bool:
    """Advance the batch in the background of this process, unless it already is."""
    running = _tasks.get(batch_id)
    if running is not None and not running.done():
        return False
    task = asyncio.get_running_loop().create_task(run(state, batch_id), name=f"batch-{batch_id}")
    _tasks[batch_id] = task

    def forget(t: asyncio.Task) -> None:
        if _tasks.get(batch_id) is t:
            del _tasks[batch_id]

    task.add_done_callback(forget)
    return True


async def stop_all() -> None:
    """Stop the work of this process (its claims lapse and another process resumes)."""
    tasks = list(_tasks.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _active_lines(state: AppState, batch_id: str) -> bool:
    async with state.sessions() as s:
        return (await s.execute(
            select(Job.id).where(Job.batch_id == batch_id, Job.status.in_(ACTIVE_JOB)).limit(1)
        )).first() is not None


# The driver ----------------------------------------------------------------------------

async def run(state: AppState, batch_id: str) -> None:
    """Take the batch's claim and advance it as far as it can go now."""
    token = secrets.token_hex(16)
    if not await claim(state, batch_id, token):
        return
    try:
        b = await load(state, batch_id)
        if b.status == B.VALIDATING:
            await validate(state, b, token)
            b = await load(state, batch_id)
        results = Results(b)
        if b.status == B.IN_PROGRESS and b.lines_enqueued < b.request_total:
            await enqueue(state, b, token, results)
            b = await load(state, batch_id)
        enqueued = b.lines_enqueued >= b.request_total or b.status != B.IN_PROGRESS
        if b.status in (B.IN_PROGRESS, B.CANCELLING, B.FINALIZING) and enqueued:
            b = await _follow(state, b, token, results)
            await finalize(state, b, token, results)
    except ClaimLost:
        log.info("batch %s: claim lost, leaving it to its new owner", batch_id)
    except Exception:
        # The claim is kept until it lapses: the reconciler retries after claim_s, not
        # on its very next tick, so a lasting fault does not spin.
        log.exception("batch %s: work failed; retried in %.0fs", batch_id, claim_s(state))
        return
    await release(state, batch_id, token)


async def advance_batches(state: AppState) -> int:
    """One reconciler pass: start work on every batch that has some and no live claim."""
    now = utcnow()
    async with state.sessions() as s:
        rows = (await s.execute(
            select(Batch.id, Batch.status, Batch.lines_enqueued, Batch.request_total)
            .where(Batch.status.in_(BATCH_WORKING),
                   or_(Batch.claimed_until.is_(None), Batch.claimed_until < now))
        )).all()
    started = 0
    for batch_id, status, enqueued, total in rows:
        if status in (B.VALIDATING, B.FINALIZING) or (status == B.IN_PROGRESS and enqueued < total):
            needed = True
        else:
            needed = not await _active_lines(state, batch_id)
        if needed and start(state, batch_id):
            started += 1
    return started


async def _follow(state: AppState, b: Batch, token: str, results: Results) -> Batch:
    """Hold the claim while the batch's lines run, writing those that end to its result
    files; return the batch as it is once none is queued or running."""
    renewed = time.monotonic()
    while await _active_lines(state, b.id):
        await results.ahead(state, b, token)
        renewed = await keep(state, b.id, token, renewed)
        await asyncio.sleep(results.pause)
    return await load(state, b.id)


# Validate --------------------------------------------------------------------------------

async def validate(state: AppState, b: Batch, token: str) -> None:
    checker = batch_lines.Checker(state.settings, Principal(b.owner_id, ""), b.endpoint)
    renewed = time.monotonic()
    async for lines in iter_lines(sessions=state.sessions, file_id=b.input_file_id):
        await asyncio.to_thread(checker.check, lines)
        if checker.stop:
            break
        renewed = await keep(state, b.id, token, renewed)
    errors = checker.finish()
    now = utcnow()
    if errors:
        values = {"status": B.FAILED, "failed_at": now, "errors": errors}
    else:
        values = {"status": B.IN_PROGRESS, "in_progress_at": now, "request_total": checker.count}
    async with state.sessions() as s:
        res = await s.execute(
            update(Batch).where(Batch.id == b.id, Batch.status == B.VALIDATING,
                                Batch.claim_token == token)
            .values(**values).execution_options(synchronize_session=False))
        await s.commit()
    if res.rowcount:
        log.info("batch %s validated: %s", b.id, values["status"],
                 extra={"batch_id": b.id, "lines": checker.count, "errors": len(errors)})


# Enqueue ---------------------------------------------------------------------------------

async def enqueue(state: AppState, b: Batch, token: str, results: Results) -> None:
    # One publish in flight while the next chunk is built and inserted.
    publishing: asyncio.Task | None = None
    try:
        seen = 0
        pending: list[tuple[int, bytes]] = []
        async for lines in iter_lines(sessions=state.sessions, file_id=b.input_file_id):
            for line in lines:
                seen += 1
                if seen > b.lines_enqueued:  # resume after the last committed chunk
                    pending.append(line)
                if len(pending) >= CHUNK:
                    publishing = await _enqueue_chunk(state, b, token, pending, publishing,
                                                      results)
                    pending = []
        if pending:
            publishing = await _enqueue_chunk(state, b, token, pending, publishing, results)
        if publishing is not None:
            await publishing
    finally:
        if publishing is not None and not publishing.done():
            await asyncio.wait({publishing})


async def _enqueue_chunk(state: AppState, b: Batch, token: str, lines: list,
                         publishing: asyncio.Task | None,
                         results: Results) -> asyncio.Task | None:
    def write_ended():
        return results.ahead(state, b, token)

    while lines:  # in parts, as the key's window has room (fair share between keys)
        await write_ended()
        room = await batch_fair.wait_turn(state, b, token, len(lines), idle=write_ended)
        publishing = await _enqueue_part(state, b, token, lines[:room], publishing)
        lines = lines[room:]
    return publishing


async def _enqueue_part(state: AppState, b: Batch, token: str, lines: list,
                        publishing: asyncio.Task | None) -> asyncio.Task | None:
    rows = await asyncio.to_thread(batch_lines.job_rows, state.settings, b, lines)
    # With the batch window on, the lines are written held back: the leading control
    # process publishes them, the busy keys' lines interleaved by weight (fair_release).
    held = batch_fair.holds_lines(state)
    if held:
        now = utcnow()
        for row in rows:
            row["held_at"] = now
    async with state.sessions() as s:
        # The batch row first: it serialises us with a cancel, which locks it too.
        res = await s.execute(
            update(Batch).where(Batch.id == b.id, Batch.claim_token == token,
                                Batch.status == B.IN_PROGRESS,
                                Batch.lines_enqueued == b.lines_enqueued)
            .values(lines_enqueued=b.lines_enqueued + len(rows),
                    claimed_until=utcnow() + timedelta(seconds=claim_s(state)))
            .execution_options(synchronize_session=False))
        if not res.rowcount:
            await s.rollback()
            raise ClaimLost(b.id)  # cancelled, or another process took over
        await s.execute(_INSERT_JOBS, rows)  # Core: no ORM unit of work per line
        await s.commit()
    b.lines_enqueued += len(rows)
    if publishing is not None:
        await publishing
    return None if held else asyncio.get_running_loop().create_task(_publish(state, rows))


async def _publish(state: AppState, rows: list[dict]) -> None:
    # While the broker is down, the rows wait for the reconciler like any unpublished job.
    if state.producer.broker_down:
        return
    try:
        await state.producer.publish_tasks(
            batch_lines.task_messages(rows, state.settings.batch_chunk_lines))
    except BrokerUnavailable as exc:
        log.warning("batch lines left for the reconciler to publish: %s", exc)
        return
    async with state.sessions() as s:
        await s.execute(
            update(Job).where(Job.id.in_([r["id"] for r in rows]), Job.published_at.is_(None))
            .values(published_at=utcnow()).execution_options(synchronize_session=False))
        await s.commit()


__all__ = ["advance_batches", "run", "start"]
