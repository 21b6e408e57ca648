"""The job store: the only code that changes a job's status.

Each method is one conditional UPDATE from `common.jobs.transition` plus the events
that go with it, so no caller can change a status and forget to tell its followers:

    claim       queued -> running (attempt + 1, lease), or queued -> expired (start_by);
                with a cap of running jobs per key, a job past it is held back instead
    finish      running|cancelling -> succeeded | failed | cancelled (attempt fence)
    claim_many, finish_many   the same for many jobs (a chunk of batch lines): one
                statement for them all, each row still fenced by its own attempt
    release     running -> queued at once, its worker shutting down (attempt fence)
    cancel      queued -> cancelled, running -> cancelling (and the worker is told)
    recover     a lapsed lease: -> queued again, failed (attempts spent) or cancelled
    expire_due  queued past start_by -> expired
    cancel_batch_lines  every queued line of a batch -> cancelled, running ones ->
                cancelling (bulk)

The statements are built once, here; `JobStore` runs them for a worker thread
(sync engine, `EventWriter`), `AsyncJobStore` for the API and the control loop
(async sessions, `AsyncEventLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from redis.exceptions import RedisError
from sqlalchemy import (
    JSON,
    Connection,
    CursorResult,
    Engine,
    Integer,
    String,
    Update,
    bindparam,
    column,
    func,
    or_,
    select,
    text,
    update,
    values,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import jsontext
from common.constants import CANCEL_CHANNEL
from common.db import Job, dispose_own_pool, make_sync_autocommit_engine, utcnow
from common.errors import Conflict, NotFound
from common.events import AsyncEventLog, EventItem, EventWriter
from common.jobs import (
    BATCH_CANCELLED_ERROR,
    EXPIRED_ERROR,
    JOB_COLUMNS,
    TERMINAL,
    JobStatus,
    envelope,
    transition,
)
from common.settings import Settings

log = logging.getLogger("monkey.store")
S = JobStatus
T = TypeVar("T")

# The statements, built once: one built per call costs more in SQLAlchemy than its
# round trip to the database.
_CLAIM = (
    transition(bindparam("job_id"), S.RUNNING, attempts=Job.attempts + 1,
               started_at=bindparam("now"), lease_expires_at=bindparam("lease"),
               worker_id=bindparam("worker_id"), held_at=None)
    .where(or_(Job.start_by.is_(None), Job.start_by >= bindparam("now")))
    .returning(*JOB_COLUMNS)
)
_EXPIRE = (
    transition(bindparam("job_id"), S.EXPIRED, finished_at=bindparam("now"), error=EXPIRED_ERROR)
    .where(Job.start_by < bindparam("now")).returning(*JOB_COLUMNS)
)
_RELEASE = (
    transition(bindparam("job_id"), S.QUEUED, expect={S.RUNNING}, attempt=bindparam("attempt"),
               lease_expires_at=None, worker_id=None, published_at=bindparam("now"))
    .returning(Job.id)
)
_GET = select(*JOB_COLUMNS).where(Job.__table__.c.id == bindparam("job_id"))
_IDS: Any = bindparam("job_ids", expanding=True)
_CLAIM_MANY = (
    transition(None, S.RUNNING, where=[Job.id.in_(_IDS), or_(Job.start_by.is_(None),
                                                              Job.start_by >= bindparam("now"))],
               attempts=Job.attempts + 1, started_at=bindparam("now"),
               lease_expires_at=bindparam("lease"), worker_id=bindparam("worker_id"),
               held_at=None)
    .returning(*JOB_COLUMNS)
)
_EXPIRE_MANY = (
    transition(None, S.EXPIRED, where=[Job.id.in_(_IDS), Job.start_by < bindparam("now")],
               finished_at=bindparam("now"), error=EXPIRED_ERROR).returning(*JOB_COLUMNS)
)

# The per-key cap of running jobs (MONKEY_MAX_RUNNING_PER_KEY). A claim under the cap
# counts its key's running jobs and claims within the room left, in one transaction
# that first takes a lock of the key: Postgres an advisory lock (two claims' counts in
# READ COMMITTED would each miss the other's claim without it), SQLite its one writer
# lock (BEGIN IMMEDIATE). A queued job past the cap is held back (`held_at`, no
# message: the control process publishes it again when its key has room,
# api/services/fair_release.py), and its message is acknowledged: the worker's thread
# goes on at once, and nothing busy-loops on a job that may not run yet.
_KEY_LOCK_SPACE = 0x6D6B  # the first key of the advisory lock: ours among other users
_LOCK_KEY = text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))")
_OWNERS = select(Job.owner_id).where(Job.id.in_(_IDS)).distinct()
_RUNNING_BY_OWNER = (select(Job.owner_id, func.count())
                     .where(Job.owner_id.in_(bindparam("owners", expanding=True)),
                            Job.status.in_([S.RUNNING, S.CANCELLING]))
                     .group_by(Job.owner_id))
_CLAIMABLE = (select(Job.id, Job.owner_id)
              .where(Job.id.in_(_IDS), Job.status == S.QUEUED,
                     or_(Job.start_by.is_(None), Job.start_by >= bindparam("now")))
              .order_by(Job.id))
_HOLD = (update(Job).where(Job.id.in_(_IDS), Job.status == S.QUEUED)
         .values(held_at=bindparam("now"), published_at=None)
         .execution_options(synchronize_session=False))


def _claim_capped(conn: Connection, cap: int, params: dict[str, Any]) -> tuple[list[Any], int]:
    """Claim what the keys' cap leaves room for of params["job_ids"] (queued ones, in id
    order) and hold the rest back, in one transaction on `conn` (autocommit): the rows
    claimed, and how many were held."""
    pg = conn.dialect.name == "postgresql"
    conn.exec_driver_sql("BEGIN" if pg else "BEGIN IMMEDIATE")
    try:
        owners = sorted(conn.execute(_OWNERS, params).scalars())
        if pg:
            for owner in owners:  # in one order everywhere: no deadlock between claims
                conn.execute(_LOCK_KEY, {"space": _KEY_LOCK_SPACE, "owner": owner})
        room = {o: cap for o in owners}
        for owner, n in conn.execute(_RUNNING_BY_OWNER, {"owners": owners}).all():
            room[owner] -= n
        take: list[str] = []
        hold: list[str] = []
        for job_id, owner in conn.execute(_CLAIMABLE, params).all():
            (take if room[owner] > 0 else hold).append(job_id)
            room[owner] -= 1
        claimed = list(conn.execute(_CLAIM_MANY, {**params, "job_ids": take}).all()) \
            if take else []
        if hold:
            conn.execute(_HOLD, {"job_ids": hold, "now": params["now"]})
        conn.exec_driver_sql("COMMIT")
    except BaseException:
        with contextlib.suppress(DBAPIError):
            conn.exec_driver_sql("ROLLBACK")
        raise
    if hold:
        log.info("jobs held back: their key is at its cap of running jobs "
                 "(MONKEY_MAX_RUNNING_PER_KEY=%d)", cap, extra={"jobs": hold[:10]})
    return claimed, len(hold)


@functools.cache
def _finish_statement(to: JobStatus) -> Update:
    return transition(
        bindparam("job_id"), to, attempt=bindparam("attempt"), output=bindparam("output"),
        error=bindparam("error"), metrics=bindparam("metrics"),
        finished_at=bindparam("now"), lease_expires_at=None,
    ).returning(*JOB_COLUMNS)


@dataclass(frozen=True, slots=True)
class End:
    """One attempt's end, for `JobStore.finish_many`."""

    job_id: str
    attempt: int
    to: JobStatus
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


def _finish_many_statement(to: JobStatus, ends: list[End], dialect: str
                           ) -> tuple[Update, dict[str, Any]]:
    """One UPDATE for many ends of one status, and its parameters: each row takes its
    own values (attempt, output, error, metrics), so the attempt fence holds row by row.
    Postgres joins a VALUES list; SQLite, which cannot name a VALUES list's columns,
    looks each row's values up by its id in one JSON object (json_extract parses it
    once per statement; a join with json_each would parse it once per row)."""
    if dialect == "postgresql":
        rows = values(column("k", String), column("att", Integer), column("output", JSON),
                      column("error", JSON), column("metrics", JSON), name="ends").data(
            [(e.job_id, e.attempt, e.output, e.error, e.metrics or {}) for e in ends])
        cols: dict[str, Any] = {"a": rows.c.att, "o": rows.c.output, "e": rows.c.error,
                                "m": rows.c.metrics}
        join = [Job.id == rows.c.k]
        params: dict[str, Any] = {}
    else:
        cols = {k: func.json_extract(bindparam("ends"), '$."' + Job.id + f'".{k}')
                for k in "aoem"}
        join = []
        params = {"ends": jsontext.dumps(
            {e.job_id: {"a": e.attempt, "o": e.output, "e": e.error, "m": e.metrics or {}}
             for e in ends})}
    # The id list too: the planner then finds each row by its key, instead of joining
    # every running job with the list.
    ids = [e.job_id for e in ends]
    stmt = transition(
        None, to, attempt=cols["a"], where=[Job.id.in_(ids), *join],
        output=cols["o"], error=cols["e"], metrics=cols["m"], finished_at=bindparam("now"),
        lease_expires_at=None,
    ).returning(*JOB_COLUMNS)
    return stmt, params


def _ended(to: JobStatus, env: dict[str, Any],
           error: dict[str, Any] | None = None) -> list[EventItem]:
    """The events of a job reaching a terminal status."""
    items: list[EventItem] = [("error", error)] if error is not None and to == S.FAILED else []
    return items + [("status", {"status": to}), ("done", env)]


def events_ttl(settings: Settings, priority: str) -> int:
    """How long a finished job's stream is kept: batch lines are rarely followed."""
    return settings.batch_events_ttl_s if priority == "batch" else settings.events_ttl_s


# The worker's face ------------------------------------------------------------------------

class JobStore:
    """Transitions of a worker process (threads), on an autocommit engine: each is one
    statement, one round trip. Writes are retried while the database is unreachable
    (a restart), for up to `settings.write_retry_s`."""

    def __init__(self, *, engine: Engine, events: EventWriter, settings: Settings):
        self.engine = engine
        self.autocommit = make_sync_autocommit_engine(engine, settings)
        self.events = events
        self.settings = settings

    def close(self) -> None:
        """Let go of the autocommit pool, where it is the store's own (SQLite)."""
        dispose_own_pool(self.autocommit, self.engine)

    def claim(self, job_id: str, *, worker_id: str) -> Any:
        """Take a queued job for this worker: its row of JOB_COLUMNS after the claim
        (attempts is this attempt), or None: not queued (a duplicate or late delivery),
        past its start_by (then it expires, with its events), or past its key's cap of
        running jobs (then it is held back: see _claim_capped).

        A job is cancelled only while it runs, so after this claim: the worker's
        cancel listener hears of it (workers/runs.py keeps a cancel that comes before
        the run registers), and its heartbeat reads `cancelling` should Redis miss it."""

        cap = self.settings.max_running_per_key

        def attempt() -> tuple[Any, Any]:
            with self.autocommit.connect() as conn:
                now = utcnow()
                lease = now + timedelta(seconds=self.settings.lease_s)
                # Only a queued job within its start_by moves: of two deliveries one wins.
                if cap:
                    claimed, held = _claim_capped(conn, cap, {
                        "job_ids": [job_id], "now": now, "lease": lease,
                        "worker_id": worker_id})
                    job = claimed[0] if claimed else None
                    if held:
                        return None, None
                else:
                    job = conn.execute(_CLAIM, {"job_id": job_id, "now": now, "lease": lease,
                                                "worker_id": worker_id}).first()
                if job is not None:
                    return job, None
                return None, conn.execute(_EXPIRE, {"job_id": job_id, "now": now}).first()

        job, expired = self.retry(attempt)
        if expired is not None:
            self.events.emit_many(job_id, _ended(S.EXPIRED, envelope(expired)), final=True)
        if job is None:
            return None
        started: dict[str, Any] = {"status": S.RUNNING, "attempt": job.attempts}
        if job.attempts > 1:
            started["restarted"] = True  # clients drop the text of the lost attempt
        # Written with the run's first tokens, or its end if sooner (within the
        # writer's coalescing window): one round trip, and one read for a follower.
        self.events.defer(job_id, "status", started)
        return job

    def finish(self, job_id: str, *, attempt: int, to: JobStatus,
               output: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Write an attempt's end, fenced by its attempt number, and publish it (an
        `error` event first for a failure). None when the attempt no longer holds the job."""

        def write() -> Any:
            with self.autocommit.connect() as conn:
                return conn.execute(_finish_statement(to), {
                    "job_id": job_id, "attempt": attempt, "output": output, "error": error,
                    "metrics": metrics or {}, "now": utcnow(),
                }).first()

        job = self.retry(write)
        if job is None:
            return None
        env = envelope(job)
        self.events.emit_many(job_id, _ended(to, env, error), final=True,
                              ttl_s=events_ttl(self.settings, job.priority))
        return env

    def claim_many(self, job_ids: list[str], *, worker_id: str) -> list[Any]:
        """Take every job of `job_ids` that is still queued, in one statement: rows of
        JOB_COLUMNS after the claim (attempts is each one's attempt), in job_ids' order.
        The rest were taken or ended already (a duplicate delivery claims nothing), are
        past their start_by and expire here, with their events, or are past their key's
        cap of running jobs and are held back (_claim_capped).

        No `running` event and no look for an earlier cancel: a chunk's lines are
        followed through their batch, and a cancel reaches them through the cancel
        channel or, failing that, the heartbeat's look at the database."""

        cap = self.settings.max_running_per_key

        def attempt() -> tuple[list[Any], list[Any]]:
            with self.autocommit.connect() as conn:
                now = utcnow()
                lease = now + timedelta(seconds=self.settings.lease_s)
                params = {"job_ids": job_ids, "now": now, "lease": lease,
                          "worker_id": worker_id}
                held = 0
                if cap:
                    claimed, held = _claim_capped(conn, cap, params)
                else:
                    claimed = list(conn.execute(_CLAIM_MANY, params).all())
                if len(claimed) + held == len(job_ids):
                    return list(claimed), []
                return list(claimed), list(conn.execute(_EXPIRE_MANY, {"job_ids": job_ids,
                                                                       "now": now}).all())

        claimed, expired = self.retry(attempt)
        self.events.emit_jobs([(r.id, _ended(S.EXPIRED, envelope(r)),
                                events_ttl(self.settings, r.priority)) for r in expired])
        # In the order of job_ids (RETURNING gives the table's): a chunk runs its lines
        # in line order, and a batch's results are written in line order.
        place = {job_id: n for n, job_id in enumerate(job_ids)}
        claimed.sort(key=lambda row: place[row.id])
        return claimed

    def finish_many(self, ends: list[End]) -> list[dict[str, Any]]:
        """Write many attempts' ends in one transaction (one statement per end status),
        each fenced by its own attempt, and publish them in one round trip.
        Returns the envelopes of the jobs written; an end whose attempt no longer holds
        its job is left out and changes nothing."""
        if not ends:
            return []
        by_status: dict[JobStatus, list[End]] = {}
        for e in ends:
            by_status.setdefault(e.to, []).append(e)

        def write() -> list[Any]:
            rows: list[Any] = []
            with self.autocommit.connect() as conn, conn.begin():
                now = utcnow()
                for to, group in by_status.items():
                    stmt, params = _finish_many_statement(to, group, conn.dialect.name)
                    rows += conn.execute(stmt, {"now": now, **params}).all()
            return rows

        rows = self.retry(write)
        errors = {e.job_id: e.error for e in ends}
        envs = [envelope(row) for row in rows]
        self.events.emit_jobs(
            [(env["id"], _ended(S(env["status"]), env, errors[env["id"]]),
              events_ttl(self.settings, env["priority"])) for env in envs])
        return envs
    def release(self, job_id: str, *, attempt: int, reason: str) -> bool:
        """Hand a running job back to the queue now, as its worker shuts down: queued
        again with no lease to wait out, fenced by the attempt (the next claim makes a
        new one, whose `running` event says `restarted`). The task message is the
        caller's to requeue; `published_at` says it is back on the broker. False when
        this attempt no longer holds a running job (a cancel came first: the job is
        `cancelling`; or it was taken away)."""

        def write() -> Any:
            with self.autocommit.connect() as conn:
                return conn.execute(_RELEASE, {"job_id": job_id, "attempt": attempt,
                                                "now": utcnow()}).first()

        if self.retry(write) is None:
            return False
        self.events.emit(job_id, "status", {"status": S.QUEUED, "requeued": True,
                                            "reason": reason})
        return True

    def retry(self, fn: Callable[[], T]) -> T:
        """Run a database write, retrying while the database is unreachable, with
        capped exponential backoff and jitter."""
        deadline = time.monotonic() + self.settings.write_retry_s
        delay = 0.1
        while True:
            try:
                return fn()
            except (OperationalError, DBAPIError) as exc:
                if not getattr(exc, "connection_invalidated", False) and not isinstance(
                        exc, OperationalError):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("database write failed, retrying in %.1fs: %s", delay, exc.orig)
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 5.0)


# The API's and the control loop's face ---------------------------------------------------

_LOCK_WAIT_MS = 2000
_ANNOUNCE_PAGE = 500


class AsyncJobStore:
    """Transitions from the event loop: cancels from requests, recoveries and expiries
    from the control loop."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession],
                 auto_sessions: async_sessionmaker[AsyncSession],
                 events: AsyncEventLog, settings: Settings):
        self.sessions = sessions
        self.auto_sessions = auto_sessions
        self.events = events
        self.settings = settings
        self._side_tasks: set[asyncio.Task[None]] = set()

    async def get(self, job_id: str, *, owner_id: str | None = None) -> Any:
        """The job as a row of JOB_COLUMNS (a fresh read); NotFound if it is not there
        or belongs to another key."""
        async with self.auto_sessions() as s:
            job = (await s.execute(_GET, {"job_id": job_id})).first()
        if job is None or (owner_id is not None and job.owner_id != owner_id):
            raise NotFound(f"no job {job_id!r}")
        return job

    async def final_envelope(self, job_id: str) -> dict[str, Any] | None:
        """The job's envelope once it is over, else None."""
        async with self.auto_sessions() as s:
            job = (await s.execute(_GET, {"job_id": job_id})).first()
        return envelope(job) if job is not None and job.status in TERMINAL else None

    async def cancel(self, job_id: str, *, owner_id: str) -> Any:
        """queued -> cancelled at once; running -> cancelling, and the worker is told.
        Returns the job after the change."""
        for _ in range(5):  # the job may move under us (queued -> running): look again
            job = await self.get(job_id, owner_id=owner_id)
            status = S(job.status)
            if status in TERMINAL:
                if status == S.CANCELLED:
                    return job
                raise Conflict(f"job {job_id} already ended as {status}; nothing to cancel")
            if status == S.CANCELLING:
                await self._signal_cancel(job_id)
                return job
            to = S.CANCELLED if status == S.QUEUED else S.CANCELLING
            extra: dict[str, Any] = {"finished_at": utcnow()} if to == S.CANCELLED else {}
            async with self.auto_sessions() as s:
                job = (await s.execute(transition(job_id, to, expect={status}, **extra)
                                       .returning(*JOB_COLUMNS))).first()
            if job is None:
                continue
            if to == S.CANCELLED:
                await self.events.append(job_id, _ended(to, envelope(job)), final=True)
            else:
                await self.events.append(job_id, [("status", {"status": to})])
                await self._signal_cancel(job_id)
            return job
        raise Conflict(f"job {job_id} keeps changing state; try cancelling again")

    async def _signal_cancel(self, job_id: str) -> None:
        # Only a running job is cancelled this way, so a worker has claimed it: the
        # message reaches it at once (workers/runs.py keeps one that comes before the
        # run registers). If Redis is away, the worker's heartbeat reads the
        # `cancelling` status from the database instead.
        try:
            await self.events.redis.publish(CANCEL_CHANNEL, job_id)
        except (RedisError, OSError) as exc:  # best effort: the database says cancelling
            log.warning("cancel signal for job %s not sent: %s", job_id, exc)

    async def recover(self, job: Any) -> bool:
        """A job whose lease lapsed (its worker died): queued again, or failed once its
        attempts are spent, or cancelled if it was cancelling. Fenced by its status and
        attempt; gives up on a row another transaction holds for long (a process stopped
        inside a transaction must not stall every other recovery)."""
        now = utcnow()
        values: dict[str, Any]
        if job.status == S.CANCELLING:
            to, values = S.CANCELLED, {"finished_at": now, "lease_expires_at": None}
        elif job.attempts >= self.settings.max_attempts:
            err = {"type": "worker_lost",
                   "message": f"the worker died during each of {job.attempts} attempts"}
            to, values = S.FAILED, {"finished_at": now, "error": err, "lease_expires_at": None}
        else:
            to = S.QUEUED
            values = {"lease_expires_at": None, "worker_id": None, "published_at": None}
        stmt = transition(job.id, to, expect={S(job.status)}, attempt=job.attempts, **values)
        async with self.sessions() as s:
            if not self.settings.is_sqlite:
                await s.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_WAIT_MS}ms'"))
            try:
                row = (await s.execute(stmt.returning(*JOB_COLUMNS))).first()
                await s.commit()
            except DBAPIError as exc:
                await s.rollback()
                log.warning("job %s not requeued this pass: %s", job.id, exc.orig)
                return False
        if row is None:
            return False
        log.warning("lease lapsed", extra={"job_id": job.id, "attempt": job.attempts,
                                           "to": str(to)})
        status: list[EventItem] = [
            ("status", {"status": to, "requeued": to == S.QUEUED, "reason": "lease lapsed"})]
        if to == S.QUEUED:
            await self.events.append(job.id, status)
        else:
            await self.events.append(job.id, status + [("done", envelope(row))], final=True)
        return True

    async def expire_due(self, *, limit: int = 1000) -> int:
        """Queued jobs past their start_by -> expired, with their events."""
        now = utcnow()
        due = select(Job.id).where(Job.status == S.QUEUED, Job.start_by < now).limit(limit)
        stmt = transition(None, S.EXPIRED, where=[Job.id.in_(due.scalar_subquery())],
                          finished_at=now, error=EXPIRED_ERROR).returning(*JOB_COLUMNS)
        async with self.auto_sessions() as s:  # one statement for them all
            rows = (await s.execute(stmt)).all()
        await self.events.append_many(
            ((row.id, _ended(S.EXPIRED, envelope(row))) for row in rows), final=True)
        return len(rows)

    async def cancel_batch_lines(self, batch_id: str, *, guard: Update) -> list[str] | None:
        """Every queued line of a batch -> cancelled, and every running one ->
        cancelling, in one transaction that first runs `guard` (the batch's own status
        change, which serialises us with its enqueue); None, and nothing changed, when
        the guard matched no row. Running lines are told at once (a chunk's lines that
        have not started yet then end as cancelled instead of running: the batch stops
        within one chunk). The lines' events go out in the background, a page per
        round trip."""
        now = utcnow()
        async with self.sessions() as s:
            # An UPDATE's result is a CursorResult (the session's execute() says Result).
            if not cast("CursorResult[Any]", await s.execute(guard)).rowcount:
                await s.rollback()
                return None
            ids = list((await s.execute(
                transition(None, S.CANCELLED, expect={S.QUEUED}, where=[Job.batch_id == batch_id],
                           finished_at=now, error=BATCH_CANCELLED_ERROR)
                .returning(Job.id))).scalars())
            running = list((await s.execute(
                transition(None, S.CANCELLING, where=[Job.batch_id == batch_id])
                .returning(Job.id))).scalars())
            await s.commit()
        if running:
            await self._signal_cancel_many(running)
        self._spawn(self._announce_ended(ids, S.CANCELLED), f"announce-{batch_id}")
        return ids

    async def _signal_cancel_many(self, job_ids: list[str]) -> None:
        # Only running jobs: no key for a later worker (none will claim them), one
        # message each on the channel, in one round trip.
        try:
            pipe = self.events.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.publish(CANCEL_CHANNEL, job_id)
            await pipe.execute()
        except (RedisError, OSError) as exc:  # the heartbeat reads `cancelling` instead
            log.warning("cancel signal for %d jobs not sent: %s", len(job_ids), exc)

    async def _announce_ended(self, job_ids: list[str], to: JobStatus) -> None:
        for i in range(0, len(job_ids), _ANNOUNCE_PAGE):
            async with self.auto_sessions() as s:
                rows = (await s.execute(select(*JOB_COLUMNS).where(
                    Job.id.in_(job_ids[i:i + _ANNOUNCE_PAGE])))).all()
            await self.events.append_many(((r.id, _ended(to, envelope(r))) for r in rows),
                                          final=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for the events still being announced (shutdown, tests)."""
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)


def due_for_recovery(now: datetime | None = None, *, limit: int = 1000) -> Any:
    """The running jobs whose lease lapsed, for `AsyncJobStore.recover`."""
    return (select(Job.id, Job.status, Job.attempts)
            .where(Job.status.in_([S.RUNNING, S.CANCELLING]),
                   Job.lease_expires_at < (now or utcnow())).limit(limit))


__all__ = ["AsyncJobStore", "End", "JobStore", "due_for_recovery", "events_ttl"]

