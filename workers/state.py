"""Per-process state of a worker: database, Redis, event writer, runtimes, supervisor.

Built once when the worker starts (workers/app.py), never at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, TypeVar

import redis

from common.db import make_sync_engine, sync_sessions
from common.events import EventWriter
from common.settings import Settings
from common.store import JobStore

if TYPE_CHECKING:
    from workers.runtimes.base import JobSpec, Runtime
    from workers.supervisor import Supervisor

log = logging.getLogger("monkey.worker")
T = TypeVar("T")


class Hooks:
    """Cross-cutting observers of job events (metrics); the default does nothing."""

    def finished(self, spec: JobSpec, envelope: dict) -> None: ...

    def retried(self, spec: JobSpec, error_type: str) -> None: ...


class WorkerState:
    def __init__(self, settings: Settings, *, queues: list[str], hooks: Hooks | None = None):
        self.settings = settings
        self.queues = queues
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{'+'.join(queues)}"
        self.engine = make_sync_engine(settings)
        self.sessions = sync_sessions(self.engine)
        # Single-statement writes (claim, finish): no BEGIN/COMMIT round trips.
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self.events = EventWriter(
            self.redis, maxlen=settings.events_maxlen, ttl_s=settings.events_ttl_s
        )
        self.store = JobStore(engine=self.engine, events=self.events, settings=settings)
        self.hooks = hooks or Hooks()
        self._runtimes: dict[str, Runtime] = {}
        self._runtimes_lock = threading.Lock()  # guards the dict only, never held while loading
        self._load_locks: dict[str, threading.Lock] = {}
        self.supervisor: Supervisor
        from workers.supervisor import Supervisor

        self.supervisor = Supervisor(self)

    def runtime_for(self, model: str) -> Runtime:
        """The runtime serving `model`, created and loaded once per process.

        Loading (an SDK import, model weights) can take long: it holds only its own
        family's lock, so heartbeats and other families go on meanwhile.
        """
        from workers.runtimes import make_runtime, runtime_key

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
        self.events.close()
        self.engine.dispose()
