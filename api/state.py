"""What the API (and the control process) hold open for their lifetime: built by
`open_state` in the app's lifespan (api/main.py) or by the control loop (api/control.py).

Routes take its parts one at a time, through the aliases of api/deps.py; only the
control process's batch engine and reconciler take it whole."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from api.limits import RequestTokens, StreamSlots
from api.metrics import QueueGauges
from api.recent import RecentJobs
from api.shutdown import ShutdownNotice
from common.db import async_sessions, make_async_engine, make_autocommit_engine
from common.events import AsyncEventLog
from common.producer import CeleryProducer, Producer
from common.settings import Settings
from common.store import AsyncJobStore


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    # The engine of auto_sessions: `engine` itself on Postgres, a pool of its own on
    # SQLite (common.db.make_autocommit_engine)
    auto_engine: AsyncEngine
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
    # Set on SIGTERM/SIGINT: open event streams end with a reconnect hint (api/shutdown.py)
    shutdown: ShutdownNotice = field(default_factory=ShutdownNotice)
    # The queue gauges of /metrics, computed at most once per scrape interval
    queue_gauges: QueueGauges = field(default_factory=lambda: QueueGauges(ttl_s=5.0))
    # Jobs submitted here lately, with their owners (api/services/jobs.py)
    recent_jobs: RecentJobs = field(default_factory=RecentJobs)



def open_state(settings: Settings, producer: Producer | None = None) -> AppState:
    engine = make_async_engine(settings)
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=10,
        health_check_interval=10, max_connections=4096,
    )
    sessions = async_sessions(engine)
    auto_engine = make_autocommit_engine(engine, settings)
    reads = async_sessions(auto_engine)
    events = AsyncEventLog(client, maxlen=settings.events_maxlen, ttl_s=settings.events_ttl_s)
    store = AsyncJobStore(sessions=sessions, auto_sessions=reads, events=events,
                          settings=settings)
    return AppState(settings=settings, engine=engine, auto_engine=auto_engine,
                    sessions=sessions, auto_sessions=reads,
                    redis=client, producer=producer or CeleryProducer(settings, sessions),
                    events=events, store=store,
                    streams=StreamSlots(settings.max_streams_per_key),
                    request_tokens=RequestTokens(per_s=settings.rate_limit_per_s,
                                                 burst=settings.rate_limit_burst),
                    queue_gauges=QueueGauges(ttl_s=settings.queue_metrics_ttl_s))


async def close_state(state: AppState) -> None:
    await state.store.drain()
    await state.producer.close()
    await state.redis.aclose()
    if state.auto_engine.sync_engine.pool is not state.engine.sync_engine.pool:
        await state.auto_engine.dispose()
    await state.engine.dispose()
