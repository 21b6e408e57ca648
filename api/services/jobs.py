"""Job operations behind the routes: submit, read, list, cancel. Keyword-only."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import time
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, Text, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api import retention
from api.deps import Principal
from api.recent import RecentJobs
from api.services import fair
from common.catalog import resolve
from common.db import Job, utcnow
from common.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, RateLimited
from common.events import AsyncEventLog
from common.ids import new_id
from common.jobs import JOB_COLUMNS, TERMINAL, JobStatus, envelope
from common.producer import Producer
from common.schemas import JobCreate
from common.settings import Settings
from common.store import AsyncJobStore
from common.webhooks import check_url_syntax, check_url_target

S = JobStatus
log = logging.getLogger("monkey.api")


def request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_limits(*, settings: Settings, job_in: JobCreate) -> None:
    s = settings
    if job_in.prompt_chars() > s.max_prompt_chars:
        raise PayloadTooLarge(
            f"input has {job_in.prompt_chars()} characters; the limit is {s.max_prompt_chars} "
            "(MONKEY_MAX_PROMPT_CHARS)"
        )
    if job_in.kind == "embed" and len(job_in.input["texts"]) > s.max_texts:
        raise PayloadTooLarge(f"at most {s.max_texts} texts per embed job (MONKEY_MAX_TEXTS)")


def new_job_row(*, settings: Settings, principal: Principal, job_in: JobCreate,
                idempotency_key: str | None = None, batch_id: str | None = None,
                custom_id: str | None = None) -> Job:
    """Validate a job request against the catalog and limits; the row to insert."""
    return Job(**new_job_values(settings=settings, principal=principal, job_in=job_in,
                                idempotency_key=idempotency_key, batch_id=batch_id,
                                custom_id=custom_id))


def new_job_values(*, settings: Settings, principal: Principal, job_in: JobCreate,
                   idempotency_key: str | None = None, batch_id: str | None = None,
                   custom_id: str | None = None, job_id: str | None = None) -> dict:
    """new_job_row's values, by Job attribute, without building the ORM object (a
    batch's lines are many: the object costs more than the checks)."""
    info = resolve(settings, job_in.model, job_in.kind)
    check_limits(settings=settings, job_in=job_in)
    now = utcnow()
    params = job_in.params.model_dump(exclude_none=True) if job_in.kind == "generate" else {}
    if job_in.model != "debug/echo":
        params.pop("delay_ms", None)
    return dict(
        id=job_id or new_id("job"), owner_id=principal.key_id, kind=job_in.kind,
        model=job_in.model,
        queue=info.queue, status=S.QUEUED.value, priority=job_in.priority, input=job_in.input,
        params=params, metadata_=job_in.metadata, metrics={}, attempts=0,
        timeout_s=job_in.timeout_s, created_at=now,
        start_by=now + timedelta(seconds=job_in.start_by_s) if job_in.start_by_s else None,
        idempotency_key=idempotency_key,
        request_hash=request_hash(job_in.model_dump(mode="json", exclude=_unset_extras(job_in)))
        if idempotency_key else None,
        batch_id=batch_id, custom_id=custom_id, **webhook_columns(job_in),
        # A batch's lines go with their batch, never on their own clock.
        expires_after_s=None if batch_id else job_in.expires_after,
        published_at=None, started_at=None, finished_at=None, output=None, error=None,
        lease_expires_at=None, worker_id=None,
    )


def _unset_extras(job_in: JobCreate) -> set[str]:
    """Fields left out of the request hash when unset, so that hashes made before they
    existed still match."""
    unset = set() if job_in.webhook else {"webhook", "webhook_events_filter"}
    return unset | ({"expires_after"} if job_in.expires_after is None else set())


def webhook_columns(job_in: JobCreate) -> dict:
    """The job's own webhook, and the first of its events still to be handed over."""
    if job_in.webhook is None:
        return {}
    events = sorted(set(job_in.webhook_events_filter or ["completed"]), reverse=True)
    return {"webhook": check_url_syntax(job_in.webhook), "webhook_events": events,
            "webhook_next": events[0]}


async def create_job(*, session: AsyncSession, producer: Producer, settings: Settings,
                     queued_counts: dict, principal: Principal, job_in: JobCreate,
                     idempotency_key: str | None = None,
                     recent: RecentJobs | None = None) -> tuple[Job, bool]:
    """Write the job, then publish it. Returns (job, created); an idempotent replay
    returns the earlier job with created False. `session` is an autocommit one: the
    job is one INSERT, one round trip. A job created is added to `recent`."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters")
    job = new_job_row(settings=settings, principal=principal, job_in=job_in,
                      idempotency_key=idempotency_key)
    if job.webhook is not None:
        await check_url_target(job.webhook, allow_private=settings.webhook_allow_private)
    if idempotency_key:
        existing = await _by_idempotency_key(session, principal, idempotency_key)
        if existing is not None:
            return _replay(existing, job), False
    queued = await check_queued_cap(session=session, settings=settings,
                                    queued_counts=queued_counts, principal=principal)
    # Fair share between keys (api/services/fair.py): past its key's window, the job
    # waits in the database, held back, and the control process publishes it.
    job.held_at = await fair.hold_at(session=session, settings=settings, priority=job.priority,
                                     queued_counts=queued_counts, principal=principal,
                                     queued=queued)
    # Marked published in its INSERT when the send is expected to go out (no UPDATE
    # to mark it later; a failed send unmarks it for the reconciler). A held job has
    # no message yet: the release marks it.
    job.published_at = producer.premark() if job.held_at is None else None
    try:
        await session.execute(_INSERT_JOB, row_values(job))
        await session.commit()
    except IntegrityError:
        await session.rollback()
        existing = await _by_idempotency_key(session, principal, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, job), False
    if job.held_at is None:
        await producer.publish_soon(job_id=job.id, kind=job.kind, model=job.model,
                                    queue=job.queue, priority=job.priority,
                                    attempt_hint=job.attempts,
                                    marked=job.published_at is not None)
    # A job whose own expires_after could let the sweep delete it while `recent` still
    # vouches for it is read from the database like any other.
    if recent is not None and (job.expires_after_s is None
                               or job.expires_after_s > recent.ttl_s):
        recent.add(job.id, principal.key_id)
    return job, True


_INSERT_JOB = cast(Table, Job.__table__).insert()  # typed as a FromClause


def row_values(job: Job) -> dict:
    """A new Job's columns, for a Core INSERT (no ORM unit of work on the hot path)."""
    return {col.element.key: getattr(job, col.name) for col in JOB_COLUMNS}


# Without a request limit, a key's queued count is asked of the database at most this
# often while it is far from the cap; in between, this process counts its own submits
# on top. With one, at most this often (the limit fails open while Redis is away).
_QUEUED_RECOUNT_S = 1.0
_QUEUED_RECOUNT_LIMITED_S = 30.0


def count_still_good(settings: Settings, known: int, age_s: float, adding: int) -> bool:
    """Whether a count of a key's queued jobs `age_s` old, plus this process's submits
    since (`known`), still proves the cap is not reached. With the request limit on,
    no key submits more than its burst and its rate since through every API process
    together (the bucket is on Redis), so a count far below the cap stays good for a
    while (up to _QUEUED_RECOUNT_LIMITED_S); without it, a second and half the cap."""
    cap = settings.max_queued_per_key
    if settings.rate_limit_per_s > 0:
        return age_s < _QUEUED_RECOUNT_LIMITED_S and known + adding + \
            settings.rate_limit_burst + settings.rate_limit_per_s * age_s <= cap
    return age_s < _QUEUED_RECOUNT_S and known + adding <= cap // 2


async def check_queued_cap(*, session: AsyncSession, settings: Settings, queued_counts: dict,
                           principal: Principal, adding: int = 1) -> int | None:
    """429 when the key already has MONKEY_MAX_QUEUED_PER_KEY interactive jobs waiting.
    (A batch's lines are bounded by the batch limits instead.) Returns the key's count
    with the new ones, as far as it is known (None when the cap is off).

    A recent count plus this process's submits since stands in for a fresh count
    while it still proves the cap far (count_still_good): the cap is a guard against
    runaway clients, and a COUNT over thousands of queued rows per submit would cost
    more than the submit (and a transaction of its own).
    """
    cap = settings.max_queued_per_key
    if not cap:
        return None
    now = time.monotonic()
    known = queued_counts.get(principal.key_id)
    if known and count_still_good(settings, known[0], now - known[1], adding):
        queued_counts[principal.key_id] = (known[0] + adding, known[1])
        return known[0] + adding
    waiting = select(Job.id).where(Job.owner_id == principal.key_id, Job.status == S.QUEUED,
                                   Job.priority == "interactive").limit(cap).subquery()
    queued = (await session.execute(select(func.count()).select_from(waiting))).scalar_one()
    if queued + adding > cap:
        raise RateLimited(f"this key has {queued} jobs waiting; the limit is {cap} "
                          "(MONKEY_MAX_QUEUED_PER_KEY): retry when some have started",
                          retry_after=5)
    queued_counts[principal.key_id] = (queued + adding, now)
    return queued + adding


def _replay(existing: Job, new: Job) -> Job:
    if existing.request_hash != new.request_hash:
        raise Conflict("this Idempotency-Key was used with a different request body")
    return existing


async def _by_idempotency_key(session: AsyncSession, principal: Principal, key: str):
    stmt = select(Job).where(Job.owner_id == principal.key_id, Job.idempotency_key == key)
    return (await session.execute(stmt)).scalar()


async def get_job(*, store: AsyncJobStore, principal: Principal, job_id: str):
    """The job as a row of JOB_COLUMNS (reads like a Job; a fresh read every call)."""
    try:
        return await store.get(job_id, owner_id=principal.key_id)
    except NotFound:
        raise await _gone(store, principal, job_id) from None


async def _gone(store: AsyncJobStore, principal: Principal, job_id: str) -> NotFound:
    """The 404 of a job this key does not have, saying so if the sweep deleted it."""
    async with store.auto_sessions() as s:
        return await retention.not_found(s, noun="job", asked=job_id, swept_id=job_id,
                                         owner_id=principal.key_id)


async def final_if_ended(*, store: AsyncJobStore, recent: RecentJobs, principal: Principal,
                         job_id: str) -> dict | None:
    """For a follower of the job's events: its envelope if it already ended, else None;
    NotFound if it is not the caller's. A job the caller submitted here lately is not
    read: its event stream says whether it ended."""
    if recent.owned(job_id, principal.key_id):
        return None
    job = await get_job(store=store, principal=principal, job_id=job_id)
    return envelope(job) if job.status in TERMINAL else None


async def queue_position(*, session: AsyncSession, store: AsyncJobStore, principal: Principal,
                         job_id: str) -> dict:
    """How many queued jobs are ahead of this one on its queue: every queued interactive
    job created before it, and for a batch job every queued interactive one too. The
    workers take interactive jobs first; within a priority the order is roughly FIFO."""
    job = await store.get(job_id, owner_id=principal.key_id)
    ahead = None
    if job.status == JobStatus.QUEUED:
        before = (Job.priority == job.priority) & (Job.created_at < job.created_at)
        if job.priority == "batch":
            before = before | (Job.priority == "interactive")
        ahead = (await session.execute(
            select(func.count()).select_from(Job)
            .where(Job.status == JobStatus.QUEUED, Job.queue == job.queue, before)
        )).scalar_one()
    return {"object": "queue_position", "job_id": job.id, "status": job.status,
            "queue": job.queue, "priority": job.priority, "ahead": ahead}


async def list_jobs(*, session: AsyncSession, principal: Principal, status: str | None,
                    kind: str | None, limit: int, after: str | None, model: str | None = None,
                    priority: str | None = None, batch_id: str | None = None,
                    q: str | None = None) -> dict:
    stmt = select(*JOB_COLUMNS).where(Job.owner_id == principal.key_id)
    if status:
        stmt = stmt.where(Job.status.in_(status.split(",")))
    for column, value in ((Job.kind, kind), (Job.model, model), (Job.priority, priority),
                          (Job.batch_id, batch_id)):
        if value:
            stmt = stmt.where(column == value)
    needle = (q or "").strip().lower()
    if "\x00" in needle:  # Postgres text cannot hold it: no job's text has one
        raise InvalidRequest("q must not contain a NUL character", param="q")
    if needle:
        rows = await _search(session, principal, stmt, needle, limit=limit, after=after)
    else:
        if after:
            stmt = stmt.where(Job.id < after)
        rows = list((await session.execute(stmt.order_by(Job.id.desc()).limit(limit + 1))).all())
    data = [envelope(j) for j in rows[:limit]]
    return {
        "object": "list", "data": data, "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    }


# `q` looks through a key's newest SEARCH_WINDOW jobs only: a range of the (owner_id, id)
# index, so a search costs the same on Postgres and SQLite however many jobs a key has.
SEARCH_WINDOW = 5000


async def _search(session: AsyncSession, principal: Principal, stmt, needle: str, *,
                  limit: int, after: str | None) -> list:
    """Up to limit + 1 rows of `stmt` whose id, batch custom_id or input text contains
    `needle` (lowercase), newest first, among the key's newest SEARCH_WINDOW jobs.

    SQL narrows with LIKE on the input's JSON text; as that text also holds the JSON's
    keys and escapes (a search for "prompt" would match every prompt), each row is then
    checked on the input's string values, and the next rows are read until the page is
    full or the window ends."""
    floor = (await session.execute(
        select(Job.id).where(Job.owner_id == principal.key_id).order_by(Job.id.desc())
        .offset(SEARCH_WINDOW - 1).limit(1))).scalar()
    if floor is not None:
        stmt = stmt.where(Job.id >= floor)
    ids = {needle}
    if needle.startswith("resp_"):  # a response's id names its job
        ids.add("job_" + needle.removeprefix("resp_"))
    text = func.lower(sql_cast(Job.input, Text))
    escaped = json.dumps(needle)[1:-1]  # as the JSON text holds quotes, newlines, accents
    stmt = stmt.where(or_(
        *(func.lower(Job.id).contains(i, autoescape=True) for i in ids),
        func.lower(Job.custom_id).contains(needle, autoescape=True),
        text.contains(needle, autoescape=True), text.contains(escaped, autoescape=True)))
    found: list = []
    cursor = after
    chunk = limit + 1
    while len(found) <= limit:
        page = stmt.where(Job.id < cursor) if cursor else stmt
        rows = (await session.execute(page.order_by(Job.id.desc()).limit(chunk))).all()
        found += [r for r in rows if _matches(r, needle, ids)]
        if len(rows) < chunk:
            break
        cursor = rows[-1].id
        chunk = min(chunk * 4, 1000)  # many false matches: fewer, larger reads
    return found


def _matches(row, needle: str, ids: set[str]) -> bool:
    return (any(i in row.id.lower() for i in ids) or needle in (row.custom_id or "").lower()
            or any(needle in s.lower() for s in _strings(row.input)))


def _strings(value) -> list[str]:
    """The string values in a job's input (a prompt, messages' contents, texts; not a
    message's role)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = [v for k, v in value.items() if k != "role"]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


async def cancel_job(*, store: AsyncJobStore, principal: Principal, job_id: str):
    """queued -> cancelled at once; running -> cancelling, and the worker is told."""
    try:
        return await store.cancel(job_id, owner_id=principal.key_id)
    except NotFound:
        raise await _gone(store, principal, job_id) from None


# How long a read of the job's event log blocks before the reader asks the database
# whether the job ended without its own `done`; and the grace a finished job's stream
# gets to deliver it (common.events.AsyncEventLog.follow).
FOLLOW_BLOCK_MS = 2000
FOLLOW_GRACE_MS = 1000


async def final_envelope(*, events: AsyncEventLog, store: AsyncJobStore, job_id: str) -> dict:
    """The job's final envelope, once its `done` is on its event log (the one reader,
    AsyncEventLog.follow: Redis while events flow, the database only when it stays
    quiet or Redis is away)."""
    async for arrived in events.follow(
            job_id, block_ms=FOLLOW_BLOCK_MS, grace_ms=FOLLOW_GRACE_MS, count=500,
            lookup=functools.partial(store.final_envelope, job_id)):
        for event in arrived:
            if event.type == "done":
                return event.data
    raise RuntimeError("event stream ended without done")  # follow always ends on done


# `Prefer: wait=N` (RFC 7240, as Replicate's predictions take it): at most a minute.
MAX_WAIT_S = 60
_WAIT = re.compile(r"^\s*wait\s*(?:=\s*\"?(\d{1,9})\"?)?\s*$", re.IGNORECASE)


def prefer_wait(prefer: str | None) -> int | None:
    """The seconds a `Prefer` header asks a submit to wait for its job (`wait=N`, capped
    at MAX_WAIT_S; a bare `wait` is MAX_WAIT_S); None without one. RFC 7240: a
    preference the server does not understand (`wait=soon`) is ignored, not refused."""
    for part in (prefer or "").split(","):
        m = _WAIT.match(part.split(";")[0])
        if m:
            wait = MAX_WAIT_S if m.group(1) is None else min(int(m.group(1)), MAX_WAIT_S)
            return wait or None
    return None


async def wait_for_end(*, events: AsyncEventLog, store: AsyncJobStore, principal: Principal,
                       job, wait_s: float) -> dict:
    """The job's envelope once it ended, if that happens within `wait_s` seconds; else
    the job as it is then (queued or running). The wait follows the job's event log;
    the database is read once at the end, for a job still going."""
    if job.status in TERMINAL:
        return envelope(job)
    try:
        return await asyncio.wait_for(final_envelope(events=events, store=store,
                                                     job_id=job.id), wait_s)
    except TimeoutError:
        return envelope(await get_job(store=store, principal=principal, job_id=job.id))
