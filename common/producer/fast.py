"""The fast path: one job's task from the event loop, one LPUSH on an asyncio Redis
client (the message built by wire.py), and Flower's `task-sent` events batched.

Celery's own producer blocks, and in a thread it would fight the event loop for the
GIL on every socket call. Celery publishes a `task-sent` event per task, a second
Redis command per job; here the events of EVENTS_FLUSH_S go out as one `task.multi`
message (Celery's own batch format, as a worker sends its task events: Flower reads
each event of it), so Flower still sees every send, with its time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.producer.base import TaskMessage
from common.producer.wire import TaskWire
from common.settings import Settings

log = logging.getLogger("monkey.producer")

EVENTS_FLUSH_S = 0.5


class FastPath:
    def __init__(self, client: aioredis.Redis):
        self.redis = client
        self.wire = TaskWire(db=client.connection_pool.connection_kwargs.get("db", 0))
        self._events: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FastPath:
        return cls(aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10,
            health_check_interval=10, max_connections=4096,
        ))

    async def send(self, msg: TaskMessage) -> None:
        """Raises RedisError or OSError when the broker is unreachable."""
        _lpush, key, payload = self.wire.message_command(msg)
        sent = self.wire.task_sent(msg)  # stamped before a worker can take the message
        await self.redis.lpush(key, payload)
        self._events.append(sent)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(EVENTS_FLUSH_S)
        await self.flush_events()

    async def flush_events(self) -> None:
        """Publish the task-sent events waiting (best effort: they are Flower's only)."""
        events, self._events = self._events, []
        if not events:
            return
        try:
            await self.redis.publish(*self.wire.task_events(events))
        except (RedisError, OSError) as exc:
            log.info("%d task-sent events not published: %s", len(events), exc)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        await self.flush_events()
        await self.redis.aclose()
