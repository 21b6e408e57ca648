"""Dependencies handed to routes: each names one thing the app holds open (api/state.py),
so a route's signature says what it uses; and the caller's key (PrincipalDep)."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.limits import StreamSlots
from api.metrics import QueueGauges
from api.recent import RecentJobs
from api.shutdown import ShutdownNotice
from api.state import AppState
from common.db import ApiKey
from common.errors import RateLimited, Unauthorized
from common.events import AsyncEventLog
from common.keys import hash_key
from common.producer import Producer
from common.settings import Settings
from common.store import AsyncJobStore

_KEY_CACHE_S = 10.0


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    weight: float = 1.0  # the key's share against other busy keys (api/services/fair.py)


def _state(request: Request) -> AppState:
    return request.app.state.monkey


# Every dependency is `async def`, even the trivial ones: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop (and a GIL handover) per request.
async def get_settings_dep(request: Request) -> Settings:
    return _state(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _state(request).sessions() as session:
        yield session


async def get_auto_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _state(request).auto_sessions() as session:
        yield session


async def get_session_maker(request: Request) -> async_sessionmaker:
    return _state(request).sessions


async def get_redis(request: Request) -> aioredis.Redis:
    return _state(request).redis


async def get_producer(request: Request) -> Producer:
    return _state(request).producer


async def get_store(request: Request) -> AsyncJobStore:
    return _state(request).store


async def get_events(request: Request) -> AsyncEventLog:
    return _state(request).events


async def get_streams(request: Request) -> StreamSlots:
    return _state(request).streams


async def get_shutdown(request: Request) -> ShutdownNotice:
    return _state(request).shutdown


async def get_queued_counts(request: Request) -> dict:
    return _state(request).queued_counts


async def get_queue_gauges(request: Request) -> QueueGauges:
    return _state(request).queue_gauges


async def get_recent_jobs(request: Request) -> RecentJobs:
    return _state(request).recent_jobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# A session for the request: a transaction (SessionDep) or autocommit (AutoSessionDep,
# where each statement commits on its own: one round trip for a read or a single write).
SessionDep = Annotated[AsyncSession, Depends(get_session)]
AutoSessionDep = Annotated[AsyncSession, Depends(get_auto_session)]
# For routes that open their own sessions: a streamed body (a session per part), or a
# health check that reports a database error instead of raising it.
SessionMakerDep = Annotated[async_sessionmaker, Depends(get_session_maker)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
ProducerDep = Annotated[Producer, Depends(get_producer)]
StoreDep = Annotated[AsyncJobStore, Depends(get_store)]
EventsDep = Annotated[AsyncEventLog, Depends(get_events)]
StreamsDep = Annotated[StreamSlots, Depends(get_streams)]
ShutdownDep = Annotated[ShutdownNotice, Depends(get_shutdown)]
# key id -> (interactive jobs queued, monotonic time counted): see check_queued_cap
QueuedCountsDep = Annotated[dict, Depends(get_queued_counts)]
RecentJobsDep = Annotated[RecentJobs, Depends(get_recent_jobs)]
QueueGaugesDep = Annotated[QueueGauges, Depends(get_queue_gauges)]


async def get_principal(request: Request) -> Principal:
    state = _state(request)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' "
                           "(create one with: monkey keys create --name NAME)")
    digest = hash_key(key.strip())
    cached = state.key_cache.get(digest)
    if cached and cached[1] > time.monotonic():
        principal = cached[0]
    else:
        principal = await _lookup(state.sessions, digest)
        state.key_cache[digest] = (principal, time.monotonic() + _KEY_CACHE_S)
    wait = await state.request_tokens.take(state.redis, principal.key_id)
    if wait > 0:
        raise RateLimited(f"too many requests for this key (MONKEY_RATE_LIMIT_PER_S="
                          f"{state.settings.rate_limit_per_s:g}); retry after the Retry-After "
                          "seconds",
                          retry_after=wait)
    return principal


async def _lookup(sessions: async_sessionmaker, digest: str) -> Principal:
    async with sessions() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == digest))).scalar()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("invalid API key: check the key, or create one with "
                           "monkey keys create --name NAME")
    return Principal(row.id, row.name, row.weight)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


__all__ = [
    "AutoSessionDep", "EventsDep", "Principal", "PrincipalDep", "ProducerDep", "QueueGaugesDep",
    "QueuedCountsDep", "RecentJobsDep", "RedisDep", "SessionDep", "SessionMakerDep",
    "SettingsDep", "ShutdownDep", "StoreDep", "StreamsDep", "get_principal",
]
