"""Batches as the OpenAI Batch API shows them: create, read, list, cancel.

validating -> in_progress -> finalizing -> completed | expired
validating -> failed (a bad line: errors name it)
validating | in_progress -> cancelling -> cancelled (finished lines kept)

The work behind these statuses (validating and enqueuing the lines, writing the output
and error files) runs in batch_work, in the control process (api/control.py).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api import control, retention
from api.deps import Principal
from api.services.files import get_file
from api.services.openai_shapes import ENDPOINTS, ts
from common.batches_db import Batch
from common.db import Job, utcnow
from common.errors import Conflict, InvalidRequest
from common.ids import new_id
from common.jobs import BATCH_TERMINAL, BatchStatus, JobStatus
from common.schemas import METADATA_DOC, check_metadata
from common.settings import Settings
from common.store import AsyncJobStore
from common.webhooks import check_url_target

B = BatchStatus
log = logging.getLogger("monkey.api")

WINDOWS = {"24h": timedelta(hours=24)}


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    # Checked by the validators below (with their own messages); the enums document them.
    endpoint: str = Field(json_schema_extra={"enum": list(ENDPOINTS)})
    completion_window: str = Field(json_schema_extra={"enum": list(WINDOWS)})
    metadata: dict[str, str] | None = Field(None, json_schema_extra=METADATA_DOC)
    # Accepted for the SDK's sake; files here are kept until deleted.
    output_expires_after: dict | None = None
    # Monkey Coder's own: called when the batch ends (batch.completed, ...), signed.
    webhook: str | None = Field(None, min_length=8, max_length=2000,
                                pattern=r"^[hH][tT][tT][pP][sS]?://[^\s]+$")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        return v

    @field_validator("completion_window")
    @classmethod
    def _window(cls, v: str) -> str:
        if v not in WINDOWS:
            raise ValueError(f"completion_window must be one of {', '.join(WINDOWS)}")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v):
        return check_metadata(v)


def batch_object(b: Batch, counts: dict | None = None) -> dict:
    counts = counts or {"total": b.request_total, "completed": b.request_completed,
                        "failed": b.request_failed}
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint,
        "errors": {"object": "list", "data": b.errors} if b.errors else None,
        "input_file_id": b.input_file_id, "completion_window": b.completion_window,
        "status": b.status, "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        **{f: ts(getattr(b, f)) for f in (
            "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at",
            "failed_at", "expired_at", "cancelling_at", "cancelled_at")},
        "request_counts": counts, "metadata": b.metadata_ or None,
    }


async def live_counts(session: AsyncSession, b: Batch) -> dict:
    """A running batch's counts, from its jobs; a finished one's are on its row."""
    if b.status in BATCH_TERMINAL:
        return {"total": b.request_total, "completed": b.request_completed,
                "failed": b.request_failed}
    rows = (await session.execute(
        select(Job.status, func.count()).where(Job.batch_id == b.id).group_by(Job.status)
    )).all()
    by = dict(rows)
    return {"total": b.request_total, "completed": by.get(JobStatus.SUCCEEDED, 0),
            "failed": by.get(JobStatus.FAILED, 0)}


async def create_batch(*, session: AsyncSession, redis: aioredis.Redis, principal: Principal,
                       batch_in: BatchCreate, settings: Settings) -> Batch:
    f = await get_file(session=session, principal=principal, file_id=batch_in.input_file_id)
    if f.purpose != "batch":
        raise InvalidRequest(f"file {f.id} has purpose {f.purpose!r}; a batch needs 'batch'")
    if batch_in.webhook is not None:
        await check_url_target(batch_in.webhook, allow_private=settings.webhook_allow_private)
    now = utcnow()
    b = Batch(id=new_id("batch"), owner_id=principal.key_id, endpoint=batch_in.endpoint,
              input_file_id=f.id, completion_window=batch_in.completion_window,
              status=B.VALIDATING, metadata_=batch_in.metadata, request_total=0,
              request_completed=0, request_failed=0, lines_enqueued=0, created_at=now,
              expires_at=now + WINDOWS[batch_in.completion_window],
              webhook=batch_in.webhook, webhook_next="completed" if batch_in.webhook else None)
    session.add(b)
    await session.commit()
    await control.kick(redis)
    return b


async def get_batch(*, session: AsyncSession, principal: Principal, batch_id: str) -> Batch:
    b = await session.get(Batch, batch_id, populate_existing=True)
    if b is None or b.owner_id != principal.key_id:
        raise await retention.not_found(session, noun="batch", asked=batch_id,
                                        swept_id=batch_id, owner_id=principal.key_id)
    return b


async def list_batches(*, session: AsyncSession, principal: Principal, limit: int,
                       after: str | None) -> dict:
    stmt = select(Batch).where(Batch.owner_id == principal.key_id)
    if after:
        stmt = stmt.where(Batch.id < after)
    rows = list((await session.execute(stmt.order_by(Batch.id.desc()).limit(limit + 1)))
                .scalars())
    data = [batch_object(b, await live_counts(session, b)) for b in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


async def cancel_batch(*, session: AsyncSession, store: AsyncJobStore, redis: aioredis.Redis,
                       principal: Principal, batch_id: str) -> Batch:
    """Queued lines are cancelled at once; running ones finish, and their results are
    kept; the batch is `cancelled` when its files are written."""
    for _ in range(5):  # the batch may move under us (validating -> in_progress): look again
        b = await get_batch(session=session, principal=principal, batch_id=batch_id)
        if b.status in (B.CANCELLING, B.CANCELLED):
            return b
        if b.status not in (B.VALIDATING, B.IN_PROGRESS):
            raise Conflict(f"batch {batch_id} is {b.status}; there is nothing to cancel")
        guard = (update(Batch).where(Batch.id == b.id, Batch.status == b.status)
                 .values(status=B.CANCELLING, cancelling_at=utcnow())
                 .execution_options(synchronize_session=False))
        await session.rollback()  # the store's transaction takes the batch row's lock
        if await store.cancel_batch_lines(batch_id, guard=guard) is None:
            continue
        await control.kick(redis)
        return await get_batch(session=session, principal=principal, batch_id=batch_id)
    raise Conflict(f"batch {batch_id} keeps changing state; try cancelling again")
