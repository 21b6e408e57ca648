"""A batch's claim: whoever validates, enqueues or finalizes a batch holds it.

The claim is a token and a deadline on the batch row. It is taken by a conditional
UPDATE (free, or lapsed), renewed in the same transaction as each write of the work,
and every such write is fenced by the token: a process that lost the claim (it was
too slow, or presumed dead) can never overwrite the work of the one that took over.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import AppState
from common.batches_db import Batch
from common.db import utcnow
from common.errors import MonkeyError
from common.jobs import BATCH_WORKING


class ClaimLost(MonkeyError):
    """Another process owns the batch now (or it moved on): stop without writing."""


def claim_s(state: AppState) -> float:
    # Like a job's lease: long enough to ride out a slow chunk, short enough that a
    # batch whose API process died is taken over within seconds.
    return max(3 * state.settings.lease_s, 5.0)


async def claim(state: AppState, batch_id: str, token: str) -> bool:
    now = utcnow()
    async with state.sessions() as s:
        res = await s.execute(
            update(Batch).where(Batch.id == batch_id, Batch.status.in_(BATCH_WORKING),
                                or_(Batch.claimed_until.is_(None), Batch.claimed_until < now))
            .values(claim_token=token, claimed_until=now + timedelta(seconds=claim_s(state)))
            .execution_options(synchronize_session=False))
        await s.commit()
    return bool(res.rowcount)


async def renew(state: AppState, s: AsyncSession, batch_id: str, token: str,
                 **values) -> None:
    """Extend the claim (and write `values`) in the caller's transaction, or ClaimLost."""
    until = utcnow() + timedelta(seconds=claim_s(state))
    # An UPDATE's result is a CursorResult (the session's execute() says Result).
    res = cast("CursorResult[Any]", await s.execute(
        update(Batch).where(Batch.id == batch_id, Batch.claim_token == token)
        .values(claimed_until=until, **values).execution_options(synchronize_session=False)))
    if not res.rowcount:
        await s.rollback()
        raise ClaimLost(batch_id)


async def keep(state: AppState, batch_id: str, token: str, renewed: float) -> float:
    """Renew the claim, in a transaction of its own, once a third of it has passed since
    `renewed` (time.monotonic() of the last renewal); returns the new one. For work that
    holds the claim without writing (waiting its turn, following its lines) or writes
    often (validation's pages). ClaimLost if another process took it."""
    if time.monotonic() - renewed <= claim_s(state) / 3:
        return renewed
    async with state.sessions() as s:
        await renew(state, s, batch_id, token)
        await s.commit()
    return time.monotonic()


async def release(state: AppState, batch_id: str, token: str) -> None:
    async with state.sessions() as s:
        await s.execute(
            update(Batch).where(Batch.id == batch_id, Batch.claim_token == token)
            .values(claim_token=None, claimed_until=None)
            .execution_options(synchronize_session=False))
        await s.commit()


async def load(state: AppState, batch_id: str) -> Batch:
    async with state.sessions() as s:
        return (await s.execute(select(Batch).where(Batch.id == batch_id)
                                .execution_options(populate_existing=True))).scalar_one()


__all__ = ["ClaimLost", "claim", "claim_s", "keep", "load", "release", "renew"]
