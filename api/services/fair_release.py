"""The release of held jobs (fair.py says why jobs are held): on the reconciler's leader,
every POLL_S while some job is held, each key with held jobs gets as many published as
its windows and its cap of running jobs leave room for, interactive ones first, oldest
first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import func, select, update

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
IDLE_S = 0.5  # between looks while none is
RELEASE_PAGE = 1000  # jobs released per key and priority per pass, at most
_ACTIVE = (S.QUEUED, S.RUNNING, S.CANCELLING)


async def release_loop(state: AppState, leading: Callable[[], bool]) -> None:
    """Publish held jobs as their keys have room, on the reconciler's leader only (two
    releasers would each fill the same room)."""
    while True:
        held = False
        try:
            if leading():
                held = await release_held(state) is not None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database or Redis away: next pass
            log.warning("release of held jobs failed: %s", exc)
        await asyncio.sleep(POLL_S if held else IDLE_S)


async def release_held(state: AppState) -> int | None:
    """One pass: each key with held jobs gets as many published as its windows and cap
    leave room for, interactive ones first, oldest first. Returns how many went out,
    or None when no job is held."""
    async with state.auto_sessions() as s:
        held = (await s.execute(select(Job.owner_id, Job.priority, func.count())
                                .where(HELD).group_by(Job.owner_id, Job.priority))).all()
        if not held:
            return None
        owners = sorted({o for o, _, _ in held})
        active = (await s.execute(
            select(Job.owner_id, Job.status, Job.priority, func.count())
            .where(Job.owner_id.in_(owners), Job.status.in_(_ACTIVE))
            .group_by(Job.owner_id, Job.status, Job.priority))).all()
    by_weight = await weights(state, owners)
    released = 0
    for owner in owners:
        held_of = {p: n for o, p, n in held if o == owner}
        counts = {(st, p): n for o, st, p, n in active if o == owner}
        for priority, take in _room(state.settings, by_weight[owner], held_of, counts):
            released += await _release(state, owner, priority, take)
    return released


def _room(settings: Settings, weight: float, held: dict[str, int],
          counts: dict[tuple[str, str], int]) -> list[tuple[str, int]]:
    """How many held jobs of each priority a key may have published now."""
    waiting_i = counts.get((S.QUEUED, "interactive"), 0) - held.get("interactive", 0)
    waiting = sum(n for (st, _), n in counts.items() if st == S.QUEUED) - sum(held.values())
    running = sum(n for (st, _), n in counts.items() if st != S.QUEUED)
    cap = settings.max_running_per_key
    room_cap = cap - running - waiting if cap else RELEASE_PAGE
    window = interactive_window(settings, weight)
    room_i = window - waiting_i if window else RELEASE_PAGE
    take_i = max(0, min(room_i, room_cap, held.get("interactive", 0), RELEASE_PAGE))
    # Held batch lines are those a claim refused at the cap (or held when it was on).
    take_b = max(0, min(room_cap - take_i, held.get("batch", 0), RELEASE_PAGE))
    return [(p, n) for p, n in (("interactive", take_i), ("batch", take_b)) if n]


_RELEASED = (Job.id, Job.kind, Job.model, Job.queue, Job.priority, Job.attempts, Job.batch_id)


async def _release(state: AppState, owner: str, priority: str, take: int) -> int:
    """Unhold and publish a key's `take` oldest held jobs of a priority. Committed as
    published before the publish: a crash in between leaves them to the lost-message
    recovery; a refused publish leaves them unpublished, for the reconciler."""
    now = utcnow()
    oldest = (select(Job.id).where(HELD, Job.owner_id == owner, Job.priority == priority)
              .order_by(Job.id).limit(take).with_for_update(skip_locked=True))
    async with state.sessions() as s:
        rows = [dict(r) for r in (await s.execute(
            update(Job).where(Job.id.in_(oldest.scalar_subquery()), HELD)
            .values(held_at=None, published_at=now).returning(*_RELEASED)
            .execution_options(synchronize_session=False))).mappings()]
        await s.commit()
    if not rows:
        return 0
    try:
        await state.producer.publish_tasks(messages(rows, state.settings.batch_chunk_lines))
    except BrokerUnavailable as exc:
        log.warning("%d released jobs left for the reconciler to publish: %s", len(rows), exc)
        async with state.sessions() as s:
            await s.execute(update(Job).where(Job.id.in_([r["id"] for r in rows]),
                                              Job.status == S.QUEUED, Job.held_at.is_(None))
                            .values(published_at=None)
                            .execution_options(synchronize_session=False))
            await s.commit()
    return len(rows)


def messages(rows: list[dict], chunk_lines: int) -> list[TaskMessage]:
    """The task messages of released jobs: a batch's lines in chunks where they run in
    chunks (batch_lines.task_messages), every other job alone (it streams its events)."""
    lines = [r for r in rows if r["batch_id"] is not None]
    alone = [TaskMessage.of_row(r) for r in rows if r["batch_id"] is None]
    return alone + (task_messages(lines, chunk_lines) if lines else [])


__all__ = ["IDLE_S", "POLL_S", "messages", "release_held", "release_loop"]
