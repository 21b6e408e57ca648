"""The fast path: one job's task from the event loop, in one pipelined round trip on an
asyncio Redis client (the message and Flower's task-sent event, built by wire.py).

Celery's own producer blocks, and in a thread it would fight the event loop for the
GIL on every socket call.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from common.producer.base import TaskMessage
from common.producer.wire import TaskWire
from common.settings import Settings


class FastPath:
    def __init__(self, client: aioredis.Redis):
        self.redis = client
        self.wire = TaskWire(db=client.connection_pool.connection_kwargs.get("db", 0))

    @classmethod
    def from_settings(cls, settings: Settings) -> FastPath:
        return cls(aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10,
            health_check_interval=10, max_connections=4096,
        ))

    async def send(self, msg: TaskMessage) -> None:
        """Raises RedisError or OSError when the broker is unreachable."""
        pipe = self.redis.pipeline(transaction=False)
        for command, key, payload in self.wire.publish_commands(msg):
            getattr(pipe, command)(key, payload)
        await pipe.execute()

    async def close(self) -> None:
        await self.redis.aclose()
