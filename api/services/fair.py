"""Fair share between keys: weights, the interactive window, the release of held jobs.

Workers serve each priority of a queue first in, first out. Published at submit, a
key's flood of 5,000 interactive jobs would sit ahead of every job another key sends a
moment later. So a key keeps at most its window of interactive jobs waiting on the
broker (MONKEY_INTERACTIVE_WINDOW times its weight); a job submitted beyond it is
written `held` (`held_at` set, no task message) and waits in the database. On the
reconciler's leader, fair_release.py publishes a key's held jobs, oldest first, as its
earlier ones start, so the broker's list interleaves the busy keys: each holds about
its window there, and in a first-in-first-out list a key's share of the workers is its
share of the waiting messages, that is, its weight. A key alone still keeps every
worker busy: its window is refilled every POLL_S.

A key's batch lines are written held too, and take turns on the broker with the other
keys' by weight (batch_fair.py, fair_release.py). With MONKEY_MAX_RUNNING_PER_KEY, a
worker's claim refuses a job past its key's cap of running jobs and holds it back
(common/store.py), and the release only publishes as many as the key has room to run.

Nothing is lost on the way: a held job is queued in the database, which is the truth.
The release commits `held_at = NULL, published_at = now` before it publishes, so a
crash in between leaves a published-looking job with no message: the reconciler's
lost-message recovery (api/recovery.py) sends it again within MONKEY_LOST_AFTER_S. A
failed publish marks the jobs unpublished at once (the reconciler sends them when the
broker is back). Held jobs are no messages: the recovery's census and its sweep, and
the reconciler's publish of unpublished jobs, leave them to this module.

The submit's decision costs no round trip in the common case: it uses the count of the
key's queued interactive jobs that the queued cap (jobs.check_queued_cap) already
made, held ones included; a key under its window is published at once.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal_column, select

from api.deps import Principal
from api.state import AppState
from common.db import ApiKey, Job, utcnow
from common.jobs import JobStatus
from common.settings import Settings

S = JobStatus
_RECOUNT_S = 1.0
_HOLD_RECOUNT_S = 0.1

# A job held back: queued, with no task message. The status is written as a literal so
# that Postgres matches the partial index ix_jobs_held even in a generic plan.
HELD = and_(Job.status == literal_column(f"'{S.QUEUED.value}'"), Job.held_at.is_not(None))


def scaled(window: int, weight: float, cap: int) -> int:
    """A key's window: the base window times its weight (at least 1; 0 stays off),
    never above its cap of running jobs (more would wait only to be refused)."""
    if window <= 0:
        return 0
    n = max(1, round(window * weight))
    return min(n, cap) if cap > 0 else n


def interactive_window(settings: Settings, weight: float) -> int:
    return scaled(settings.interactive_window, weight, settings.max_running_per_key)


def batch_window(settings: Settings, weight: float) -> int:
    return scaled(settings.batch_window, weight, settings.max_running_per_key)


async def weights(state: AppState, owner_ids: list[str]) -> dict[str, float]:
    """The weight of each key (1 for a key that is gone)."""
    async with state.auto_sessions() as s:
        found = dict((await s.execute(select(ApiKey.id, ApiKey.weight)
                                      .where(ApiKey.id.in_(owner_ids)))).all())
    return {o: float(found.get(o) or 1.0) for o in owner_ids}


# Submit ----------------------------------------------------------------------------------

async def hold_at(*, session: Any, settings: Settings, priority: str, queued_counts: dict,
                  principal: Principal, queued: int | None) -> datetime | None:
    """When the interactive job being submitted is held back: now, if its key already
    has its window of interactive jobs queued; else None (publish it now). `queued` is
    the key's count of queued interactive jobs with this one, as the queued cap's check
    knows it (None when that check is off: then it is counted here, at most once a
    second per key and process, this process's submits added in between)."""
    window = interactive_window(settings, principal.weight)
    if not window or priority != "interactive":
        return None
    known = queued_counts.get(principal.key_id)
    if queued is not None and queued > window and (
            known is None or time.monotonic() - known[1] >= _HOLD_RECOUNT_S):
        # The queued cap's count may be half a minute old (it only has to prove the cap
        # far), its own submits added and the jobs started since not taken off (a
        # script running one quick job after another adds a hundred in a second): count
        # again before holding a job back (at most every _HOLD_RECOUNT_S per key).
        queued_counts.pop(principal.key_id, None)
        queued = None
    if queued is None:
        # Counted up to the queued cap too: the cap's check reads this count next.
        limit = max(window + 1, settings.max_queued_per_key)
        queued = await _count_queued(session, queued_counts, principal.key_id, limit)
    return utcnow() if queued > window else None


async def _count_queued(session: Any, queued_counts: dict, key_id: str, limit: int) -> int:
    now = time.monotonic()
    known = queued_counts.get(key_id)
    if known and now - known[1] < _RECOUNT_S:
        count = known[0] + 1
    else:
        waiting = (select(Job.id).where(Job.owner_id == key_id, Job.status == S.QUEUED,
                                        Job.priority == "interactive")
                   .limit(limit).subquery())
        count = int((await session.execute(
            select(func.count()).select_from(waiting))).scalar_one()) + 1
        known = (0, now)
    queued_counts[key_id] = (count, known[1])
    return count


__all__ = ["HELD", "batch_window", "hold_at", "interactive_window", "scaled", "weights"]
