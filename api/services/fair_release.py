"""The release of held jobs (fair.py says why jobs are held): on the reconciler's leader,
every POLL_S while some job is held, oldest first within a key.

- Interactive jobs: a key gets published what its interactive window leaves room for.
- Batch lines (written held by the batch engine, batch_fair.py): the broker holds at
  most MONKEY_BATCH_WINDOW of them in all, and the room the workers make is shared
  between the keys with lines held by weight (deficit round robin: a key's unused
  share carries over, and lines go out in whole chunks), their messages interleaved
  by weight in one publish. A room per key instead (each key topping up its own
  window) would fill the list in blocks: while one key's lines are served, only that
  key gets room, so its new lines all land behind the other key's block, and the keys
  take turns of a whole window each (bench/fairness.py showed plateaus of 5 s).
- With MONKEY_MAX_RUNNING_PER_KEY, no key gets more published than its cap leaves
  room for (running and waiting jobs counted), whatever the windows say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.batch_lines import task_messages
from api.services.fair import HELD, interactive_window, weights
from api.state import AppState
from common.db import Job, utcnow
from common.errors import BrokerUnavailable
from common.jobs import JobStatus
from common.producer import TaskMessage
from common.settings import Settings

log = logging.getLogger("monkey.fair")
S = JobStatus

POLL_S = 0.1  # between releases while some job is held
IDLE_S = 0.25  # between looks while none is
RELEASE_PAGE = 1000  # jobs released per key and priority per pass, at most
_ACTIVE = (S.QUEUED, S.RUNNING, S.CANCELLING)


class Releaser:
    """The release passes of one leader; holds each key's deficit between passes."""

    def __init__(self, state: AppState):
        self.state = state
        self.settings = state.settings
        self.deficit: dict[str, float] = {}  # key -> batch lines owed (deficit round robin)

    async def loop(self, leading: Callable[[], bool]) -> None:
        """Release on the reconciler's leader only (two releasers would each fill the
        same room)."""
        while True:
            held = False
            try:
                if leading():
                    held = await self.release() is not None
                else:
                    self.deficit.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database or Redis away: next pass
                log.warning("release of held jobs failed: %s", exc)
            await asyncio.sleep(POLL_S if held else IDLE_S)

    async def release(self) -> int | None:
        """One pass. Returns how many jobs went out, or None when no job is held."""
        async with self.state.auto_sessions() as s:
            held = (await s.execute(select(Job.owner_id, Job.priority, func.count())
                                    .where(HELD).group_by(Job.owner_id, Job.priority))).all()
            if not held:
                self.deficit.clear()
                return None
            owners = sorted({o for o, _, _ in held})
            active = (await s.execute(
                select(Job.owner_id, Job.status, Job.priority, func.count())
                .where(Job.owner_id.in_(owners), Job.status.in_(_ACTIVE))
                .group_by(Job.owner_id, Job.status, Job.priority))).all()
            on_broker = await self._batch_on_broker(s) if self.settings.batch_window else 0
        by_weight = await weights(self.state, owners)
        keys = {o: Key(o, by_weight[o]) for o in owners}
        for o, p, n in held:
            keys[o].held[p] = n
        for o, st, p, n in active:
            keys[o].counts[(st, p)] = n
        takes = self._batch_takes(keys, on_broker)
        rows: dict[str, list[dict]] = {}
        for key in keys.values():
            take_i, room = key.interactive_take(self.settings)
            take_b = min(takes.get(key.owner, 0), room)
            for priority, take in (("interactive", take_i), ("batch", take_b)):
                if take > 0:
                    rows.setdefault(key.owner, []).extend(
                        await self._unhold(key.owner, priority, take))
        if not rows:
            return 0
        await self._publish(rows, by_weight)
        return sum(len(r) for r in rows.values())

    async def _batch_on_broker(self, s: AsyncSession) -> int:
        """Batch lines waiting on the broker (queued, not held), counted up to the window."""
        window = self.settings.batch_window
        waiting = (select(Job.id).where(Job.status == S.QUEUED, Job.priority == "batch",
                                        Job.held_at.is_(None)).limit(window).subquery())
        return int((await s.execute(select(func.count()).select_from(waiting))).scalar_one())

    def _batch_takes(self, keys: dict[str, Key], on_broker: int) -> dict[str, int]:
        """How many held batch lines each key gets published: the room under the batch
        window shared by weight, in whole chunks while a key has more held (deficit
        round robin). With the window off: all of them (a page at a time)."""
        busy = {o: k for o, k in keys.items() if k.held.get("batch")}
        for owner in list(self.deficit):
            if owner not in busy:
                del self.deficit[owner]
        if not busy:
            return {}
        window = self.settings.batch_window
        if not window:
            return {o: RELEASE_PAGE for o in busy}
        room = max(window - on_broker, 0)
        total = sum(k.weight for k in busy.values())
        chunk = self.settings.batch_chunk_lines
        takes = {}
        for owner, key in busy.items():
            owed = min(self.deficit.get(owner, 0.0) + room * key.weight / total, window)
            held = key.held["batch"]
            take = min(int(owed), held, RELEASE_PAGE)
            if take < held:
                take -= take % chunk  # whole chunks while more are held
            # A key whose held lines all went out keeps no credit: spent later, on lines
            # held since, it would put more than the window on the broker.
            self.deficit[owner] = owed - take if take < held else 0.0
            takes[owner] = take
        return takes

    async def _unhold(self, owner: str, priority: str, take: int) -> list[dict]:
        """Mark a key's `take` oldest held jobs of a priority published (before they
        are: a crash in between leaves them to the lost-message recovery)."""
        now = utcnow()
        oldest = (select(Job.id).where(HELD, Job.owner_id == owner, Job.priority == priority)
                  .order_by(Job.id).limit(take).with_for_update(skip_locked=True))
        async with self.state.sessions() as s:
            rows = [dict(r) for r in (await s.execute(
                update(Job).where(Job.id.in_(oldest.scalar_subquery()), HELD)
                .values(held_at=None, published_at=now).returning(*_RELEASED)
                .execution_options(synchronize_session=False))).mappings()]
            await s.commit()
        # In id order (a batch's line order): RETURNING gives the rows as the table
        # holds them, and chunks of scattered lines would leave the batch's earliest
        # lines active the longest, holding back the result files written in line order.
        rows.sort(key=lambda r: r["id"])
        return rows

    async def _publish(self, rows: dict[str, list[dict]], by_weight: dict[str, float]) -> None:
        """Publish the released jobs in one go, the keys' messages interleaved by weight;
        a refused publish leaves them unpublished, for the reconciler."""
        try:
            await self.state.producer.publish_tasks(
                interleave(rows, by_weight, self.settings.batch_chunk_lines))
        except BrokerUnavailable as exc:
            ids = [r["id"] for key_rows in rows.values() for r in key_rows]
            log.warning("%d released jobs left for the reconciler to publish: %s", len(ids), exc)
            async with self.state.sessions() as s:
                await s.execute(update(Job).where(Job.id.in_(ids), Job.status == S.QUEUED,
                                                  Job.held_at.is_(None))
                                .values(published_at=None)
                                .execution_options(synchronize_session=False))
                await s.commit()


class Key:
    """One key's counts in a pass: held jobs by priority, active ones by status and
    priority."""

    def __init__(self, owner: str, weight: float):
        self.owner, self.weight = owner, weight
        self.held: dict[str, int] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def interactive_take(self, settings: Settings) -> tuple[int, int]:
        """Held interactive jobs to publish now, and the room the cap leaves after them
        (RELEASE_PAGE without a cap)."""
        held_i = self.held.get("interactive", 0)
        waiting_i = self.counts.get((S.QUEUED, "interactive"), 0) - held_i
        waiting = (sum(n for (st, _), n in self.counts.items() if st == S.QUEUED)
                   - sum(self.held.values()))
        running = sum(n for (st, _), n in self.counts.items() if st != S.QUEUED)
        cap = settings.max_running_per_key
        room = cap - running - waiting if cap else RELEASE_PAGE
        window = interactive_window(settings, self.weight)
        take = max(0, min(window - waiting_i if window else RELEASE_PAGE, room, held_i,
                          RELEASE_PAGE))
        return take, room - take if cap else RELEASE_PAGE


_RELEASED = (Job.id, Job.kind, Job.model, Job.queue, Job.priority, Job.attempts, Job.batch_id)


def messages(rows: list[dict], chunk_lines: int) -> list[TaskMessage]:
    """The task messages of released jobs: a batch's lines in chunks where they run in
    chunks (batch_lines.task_messages), every other job alone (it streams its events)."""
    lines = [r for r in rows if r["batch_id"] is not None]
    alone = [TaskMessage.of_row(r) for r in rows if r["batch_id"] is None]
    return alone + (task_messages(lines, chunk_lines) if lines else [])


def interleave(rows: dict[str, list[dict]], by_weight: dict[str, float],
               chunk_lines: int) -> list[TaskMessage]:
    """Every key's messages in one list, ordered by each message's virtual finish time
    (the key's lines so far over its weight), so that a list served first in, first out
    serves the keys by weight."""
    order: list[tuple[float, int, TaskMessage]] = []
    for owner, key_rows in rows.items():
        sent = 0
        for msg in messages(key_rows, chunk_lines):
            sent += len(msg.job_ids) or 1
            order.append((sent / by_weight[owner], len(order), msg))
    return [msg for _, _, msg in sorted(order, key=lambda o: o[:2])]


async def release_loop(state: AppState, leading: Callable[[], bool]) -> None:
    """The control process's releaser (api/control.py)."""
    await Releaser(state).loop(leading)


__all__ = ["IDLE_S", "POLL_S", "Releaser", "interleave", "messages", "release_loop"]
