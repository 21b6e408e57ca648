"""Background duties of a worker process, one thread each:

- heartbeat: renews the lease of every running job (a job whose lease cannot be
  renewed was taken from us: its run is stopped with `lease_lost`) and notices jobs
  marked `cancelling` in the database;
- presence: publishes this worker in Redis (queues, loaded models) for
  GET /v1/queues and /v1/models. A thread of its own, so that a Redis that does not
  answer (a partition: each call waits out its socket timeout) never holds up the
  lease renewals, which need only the database;
- held-sync: writes which job messages this worker holds to Redis, in batches
  (the reconciler rescues the messages of dead workers from it);
- cancel listener: a Redis pub/sub subscription that stops a cancelled job's run
  within a millisecond or so, so generation halts within a token.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import redis
from redis.typing import EncodableT, FieldT
from sqlalchemy import Engine, select, update

from common.constants import CANCEL_CHANNEL, HELD_KEY, WORKER_KEY
from common.db import Job, utcnow
from common.jobs import ACTIVE, TERMINAL, JobStatus
from common.settings import Settings
from workers.runs import RunRegistry

log = logging.getLogger("monkey.worker")

HELD_SYNC_S = 0.2


class Supervisor:
    """Handed the connections and run registry its threads use rather than the Worker
    that owns it (workers/worker.py), so neither module imports the other."""

    def __init__(self, settings: Settings, *, worker_id: str, queues: list[str],
                 redis_client: redis.Redis, db: Engine, runs: RunRegistry,
                 loaded_models: Callable[[], list[str]]):
        self.settings = settings
        self.worker_id = worker_id
        self.queues = queues
        self.redis = redis_client
        self.db = db  # autocommit: see beat()
        self.runs = runs
        self.loaded_models = loaded_models
        self._stopping = threading.Event()
        self.ready = False
        self._held_lock = threading.Lock()
        self._held_changes: dict[str, bool] = {}  # job id -> held (True) or released
        self._holding: set[str] = set()  # held now (for the idle exit, workers/idle.py)
        self._held_dirty = threading.Event()
        self._threads = [
            threading.Thread(target=self._held_loop, name="held-sync", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self._presence_loop, name="presence", daemon=True),
            threading.Thread(target=self._cancel_loop, name="cancel-listener", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        # The held set stays: jobs left in it are republished by the reconciler.
        self._stopping.set()
        try:
            self.redis.delete(WORKER_KEY.format(worker_id=self.worker_id))
        except redis.RedisError:
            pass

    def hold(self, job_id: str) -> None:
        """A task message for `job_id` reached this worker (not yet claimed).

        Recorded in memory and written to Redis by the held-sync thread within
        HELD_SYNC_S, so delivery waits for no round trip. The reconciler looks only at
        messages unacked for longer than a lease, far longer than that lag.
        """
        with self._held_lock:
            self._held_changes[job_id] = True
            self._holding.add(job_id)
        self._held_dirty.set()

    def release(self, job_id: str) -> None:
        with self._held_lock:
            if self._held_changes.pop(job_id, None) is None:  # already in Redis
                self._held_changes[job_id] = False
            self._holding.discard(job_id)
        self._held_dirty.set()

    def holding(self) -> int:
        """How many task messages this worker holds now (received, not finished)."""
        with self._held_lock:
            return len(self._holding)

    def sync_held(self) -> None:
        """Write the held set's changes since the last sync (a job held and released in
        between costs nothing)."""
        with self._held_lock:
            changes, self._held_changes = self._held_changes, {}
        if not changes:
            return
        key = HELD_KEY.format(worker_id=self.worker_id)
        added = [j for j, held in changes.items() if held]
        removed = [j for j, held in changes.items() if not held]
        try:
            pipe = self.redis.pipeline(transaction=False)
            if added:
                pipe.sadd(key, *added)
            if removed:
                pipe.srem(key, *removed)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("held jobs not recorded (retrying): %s", exc)
            with self._held_lock:  # newer changes win over the ones that failed
                self._held_changes = {**changes, **self._held_changes}

    def _held_loop(self) -> None:
        while not self._stopping.is_set():
            self._held_dirty.wait(1.0)
            self._held_dirty.clear()
            self.sync_held()
            self._stopping.wait(HELD_SYNC_S)

    # Heartbeat -----------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_s
        while not self._stopping.wait(interval):
            try:
                self.renew()
            except Exception:  # keep beating: a database blip must not kill the thread
                log.exception("heartbeat failed")

    def _presence_loop(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_s):
            try:
                self._publish_presence(len(self.runs.active()))
            except Exception:  # keep publishing: the next one may go through
                log.exception("presence not published")

    def beat(self) -> None:
        """Publish this worker's presence, then renew its leases (what the presence and
        heartbeat threads each do on their own)."""
        self._publish_presence(len(self.runs.active()))
        self.renew()

    def renew(self) -> None:
        runs = self.runs.active()
        if not runs:
            return
        lease = timedelta(seconds=self.settings.lease_s)
        active = [s.value for s in ACTIVE]
        # Autocommit: each statement commits on its own, so this process never holds a
        # row lock between statements. A worker stopped mid-heartbeat (SIGSTOP, a VM
        # pause) would otherwise keep its jobs' rows locked, and the reconciler could
        # not requeue them until it woke.
        # One statement per attempt number among the runs (a chunk's lines share one),
        # each fenced by it: a run whose job another attempt took renews nothing.
        by_attempt: dict[int, list[str]] = {}
        for run in runs:
            by_attempt.setdefault(run.spec.attempt, []).append(run.spec.id)
        with self.db.connect() as s:
            # Each renewed row says its status too: a `cancelling` one was cancelled
            # while the cancel channel may have missed us (no look of its own needed).
            renewed: dict[str, str] = {}
            for attempt, ids in by_attempt.items():
                renewed.update(s.execute(
                    update(Job)
                    .where(Job.id.in_(ids), Job.attempts == attempt, Job.status.in_(active))
                    .values(lease_expires_at=utcnow() + lease)
                    .returning(Job.id, Job.status)
                    .execution_options(synchronize_session=False)
                ).tuples().all())
            missed = [r for r in runs if r.spec.id not in renewed and not r.should_stop()]
            if missed:
                # Most often the run's own end was written between our look at the
                # runs and the renewal (it leaves the registry a moment later): stopping
                # it changes nothing then, and it is no loss to warn of. A job that
                # another attempt took, or that went back to the queue, is lost.
                ended = set(s.execute(
                    select(Job.id, Job.attempts)
                    .where(Job.id.in_([r.spec.id for r in missed]),
                           Job.status.in_([t.value for t in TERMINAL]))
                ).tuples())
                for run in missed:
                    if (run.spec.id, run.spec.attempt) not in ended:
                        log.warning("lease lost", extra={"job_id": run.spec.id,
                                                         "attempt": run.spec.attempt})
                    run.stop("lease_lost")
        for run in runs:
            if renewed.get(run.spec.id) == JobStatus.CANCELLING:
                run.stop("cancelled")

    def _publish_presence(self, running: int) -> None:
        key = WORKER_KEY.format(worker_id=self.worker_id)
        info: dict[FieldT, EncodableT] = {
            "worker_id": self.worker_id,
            "queues": json.dumps(self.queues),
            "models": json.dumps(self.loaded_models()),
            "pid": os.getpid(),
            "running": running,
            "ready": int(self.ready),
            "seen": time.time(),
        }
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, mapping=info)
            pipe.expire(key, max(int(self.settings.heartbeat_s * 3), 5))
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("worker presence not published: %s", exc)

    # Cancel listener ---------------------------------------------------------------
    def _cancel_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                while not self._stopping.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg and msg["type"] == "message":
                        self._on_cancel(msg["data"].decode())
            except (redis.RedisError, OSError) as exc:
                log.warning("cancel listener reconnecting: %s", exc)
                self._stopping.wait(1.0)

    def _on_cancel(self, job_id: str) -> None:
        run = self.runs.cancel(job_id)
        if run is not None:
            run.stop("cancelled")
