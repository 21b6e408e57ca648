"""One worker process's state: database, Redis, event writer, runtimes, the jobs it
runs, its hooks and its supervisor, all owned by one `Worker`.

Built once when the worker process starts (workers/app.py hangs it on the Celery app,
where tasks find it), never at import time. Tests build their own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from common.compat.kombu_redis import adopt_legacy_layout
from common.constants import LOCAL_PREFIX, QUEUE_GPU
from common.db import make_sync_engine, sync_sessions
from common.events import EventWriter
from common.settings import Settings
from common.store import JobStore
from workers.drain import Drain
from workers.hooks import Hooks
from workers.runs import RunRegistry
from workers.runtimes import make_runtime, runtime_key
from workers.runtimes.base import Runtime
from workers.supervisor import Supervisor

log = logging.getLogger("monkey.worker")


class Worker:
    def __init__(self, settings: Settings, *, queues: list[str], hooks: Hooks | None = None):
        self.settings = settings
        self.queues = queues
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{'+'.join(queues)}"
        self.engine = make_sync_engine(settings)
        self.sessions = sync_sessions(self.engine)
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self.events = EventWriter(
            self.redis, maxlen=settings.events_maxlen, ttl_s=settings.events_ttl_s
        )
        self.store = JobStore(engine=self.engine, events=self.events, settings=settings)
        # Single-statement writes (claim, finish, heartbeat): no BEGIN/COMMIT round trips.
        self.autocommit = self.store.autocommit
        self.hooks = hooks or Hooks()
        self.runs = RunRegistry()
        self.drain = Drain(self.runs, drain_s=settings.drain_s)
        self._runtimes: dict[str, Runtime] = {}
        self._runtimes_lock = threading.Lock()  # guards the dict only, never held while loading
        self._load_locks: dict[str, threading.Lock] = {}
        self.supervisor = Supervisor(
            settings, worker_id=self.worker_id, queues=queues, redis_client=self.redis,
            db=self.autocommit, runs=self.runs, loaded_models=self.loaded_models,
        )

    def start(self) -> None:
        """Load the models this worker serves, then start the supervisor's threads."""
        self._adopt_legacy_layout()
        if QUEUE_GPU in self.queues:
            # Load every local model before taking a task: readiness waits for it.
            self.runtime_for(f"{LOCAL_PREFIX}/*")
        self.supervisor.start()
        self.supervisor.ready = True
        self.supervisor.beat()

    def _adopt_legacy_layout(self) -> None:
        """Before consuming: messages left on the priority lists of the Redis layout
        before kombu's defaults move to today's (the reconciler does it too)."""
        try:
            moved, dropped = adopt_legacy_layout(self.redis)
        except redis.RedisError as exc:
            log.warning("could not check Redis for the legacy queue layout: %s", exc)
            return
        if moved or dropped:
            log.info("adopted the legacy Redis layout: %d queued messages moved, "
                     "%d binding entries dropped", moved, dropped)

    def runtime_for(self, model: str) -> Runtime:
        """The runtime serving `model`, created and loaded once per process.

        Loading (an SDK import, model weights) can take long: it holds only its own
        family's lock, so heartbeats and other families go on meanwhile.
        """
        key = runtime_key(model)
        with self._runtimes_lock:
            runtime = self._runtimes.get(key)
            if runtime is not None:
                return runtime
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._runtimes_lock:
                runtime = self._runtimes.get(key)
            if runtime is None:
                runtime = make_runtime(key, self.settings)
                runtime.load()
                with self._runtimes_lock:
                    self._runtimes[key] = runtime
        return runtime

    def loaded_models(self) -> list[str]:
        with self._runtimes_lock:
            runtimes = list(self._runtimes.values())
        return sorted({m for r in runtimes for m in r.loaded_models()})

    def close(self) -> None:
        self.supervisor.stop()
        # What a drain handed back is released: the reconciler need not republish it.
        self.supervisor.sync_held()
        self.events.close()
        self.store.close()
        self.engine.dispose()
