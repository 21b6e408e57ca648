"""What the API holds open for its lifetime, built in the lifespan (api/main.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from api.limits import RequestTokens, StreamSlots
from common.events import AsyncEventLog
from common.producer import Producer
from common.settings import Settings
from common.store import AsyncJobStore


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    # Autocommit sessions: each statement commits on its own, so a single read or a
    # single-row write costs one round trip (no BEGIN, no COMMIT).
    auto_sessions: async_sessionmaker
    redis: aioredis.Redis
    producer: Producer
    events: AsyncEventLog
    store: AsyncJobStore
    # key hash -> (principal, expires at); saves a database read per request
    key_cache: dict = field(default_factory=dict)
    streams: StreamSlots = field(default_factory=lambda: StreamSlots(0))
    request_tokens: RequestTokens = field(
        default_factory=lambda: RequestTokens(per_s=0, burst=0))
    # key id -> (interactive jobs queued, monotonic time counted): see check_queued_cap
    queued_counts: dict = field(default_factory=dict)

    @property
    def publisher(self) -> Producer:
        """The producer's former name, for callers not yet moved to `producer`."""
        return self.producer
