"""Fair share between keys inside the batch priority.

Every batch line goes to the same broker list (the queue's batch step), which workers
serve first in, first out. Enqueued all at once, one key's 50,000-line batch would sit
ahead of every line another key submits a second later, for as long as it takes to run.
So a key's batches enqueue in turns, in two stages:

- into the database: before each part, the batch engine waits until its key has fewer
  than two windows of lines queued (its window is MONKEY_BATCH_WINDOW times the key's
  weight, at most MONKEY_MAX_RUNNING_PER_KEY where that is set), and writes the next
  lines held back (`held_at`): the rest of a batch waits in its uploaded file
  (enqueuing resumes after the last committed part, batch_work.enqueue). Two windows,
  so that held lines are at hand when the workers make room: with one, the database
  stage refilled only after the broker's lines had run, and the workers waited for
  both stages' polls (a lone key's 10,000 echo lines ran a third slower than with
  the window off);
- onto the broker: the leading control process publishes held lines as the workers
  make room, at most MONKEY_BATCH_WINDOW lines waiting there in all, the room shared
  between the busy keys by weight and their messages interleaved (fair_release.py).

In a list served first in, first out, a key's share of the workers is its share of the
waiting lines, so keys of equal weight advance at the same rate whatever their
batches' sizes, a key of weight 2 twice as fast as a key of weight 1, and a second
key's first lines wait behind at most a window of the first key's. A key alone still
keeps the workers busy: the room refills as fast as it empties. 0 turns the window off
(every line is published as it is enqueued, first come first served).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from api.services import fair
from api.services.batch_claim import keep
from api.state import AppState
from common.batches_db import Batch
from common.db import Job
from common.jobs import JobStatus

POLL_S = 0.1
AHEAD = 2  # windows of a key's lines queued (held or on the broker): see the docstring


async def lines_waiting(state: AppState, owner_id: str, limit: int) -> int:
    """The key's batch lines waiting to start, counted up to `limit` (an index range
    scan of ix_jobs_owner_status, never more than `limit` rows)."""
    waiting = (select(Job.id).where(Job.owner_id == owner_id, Job.status == JobStatus.QUEUED,
                                    Job.priority == "batch").limit(limit).subquery())
    async with state.auto_sessions() as s:
        return int((await s.execute(select(func.count()).select_from(waiting))).scalar_one())


def holds_lines(state: AppState) -> bool:
    """Whether new lines are written held, for fair_release to publish (window on)."""
    return state.settings.batch_window > 0


async def wait_turn(state: AppState, b: Batch, token: str, lines: int,
                    idle: Callable[[], Awaitable[None]] | None = None) -> int:
    """Return when the batch's key has fewer than AHEAD windows of lines queued, with
    how many of the next `lines` to enqueue now: the room left, but at least a quarter
    of the window (a part per line would cost a transaction each). Keeps the batch's
    claim alive meanwhile (ClaimLost if another process took it).

    `idle` is awaited at each look while it waits (the batch engine writes the lines
    that ended meanwhile).

    Topping the window up by what it lacks, rather than by whole chunks, keeps each
    key's waiting lines close to its window, and so the keys' shares close to their
    weights (a 500-line chunk on a 40-line window would swamp the weights)."""
    if state.settings.batch_window <= 0:
        return lines
    window = fair.batch_window(state.settings, (await fair.weights(state, [b.owner_id]))[
        b.owner_id])
    ahead = AHEAD * window
    renewed = time.monotonic()
    while (waiting := await lines_waiting(state, b.owner_id, ahead)) >= ahead:
        renewed = await keep(state, b.id, token, renewed)
        if idle is not None:
            await idle()
        await asyncio.sleep(POLL_S)
    return min(lines, max(ahead - waiting, window // 4, 1))


__all__ = ["AHEAD", "holds_lines", "lines_waiting", "wait_turn"]
