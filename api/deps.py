"""Dependencies handed to routes: settings, sessions, Redis, the caller's key."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import AppState
from common.db import ApiKey
from common.errors import RateLimited, Unauthorized
from common.keys import hash_key
from common.settings import Settings

_KEY_CACHE_S = 10.0


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str


# Every dependency is `async def`, even the trivial ones: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop (and a GIL handover) per request.
async def get_state(request: Request) -> AppState:
    return request.app.state.monkey


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


async def get_auto_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.auto_sessions() as session:
        yield session


async def get_redis(state: StateDep) -> aioredis.Redis:
    return state.redis


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
AutoSessionDep = Annotated[AsyncSession, Depends(get_auto_session)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]


async def get_principal(request: Request, state: StateDep) -> Principal:
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
        principal = await _lookup(state, digest)
    wait = await state.request_tokens.take(state.redis, principal.key_id)
    if wait > 0:
        raise RateLimited(f"too many requests for this key (MONKEY_RATE_LIMIT_PER_S="
                          f"{state.settings.rate_limit_per_s:g}); retry after the Retry-After "
                          "seconds",
                          retry_after=wait)
    return principal


async def _lookup(state: AppState, digest: str) -> Principal:
    async with state.sessions() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == digest))).scalar()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("invalid API key: check the key, or create one with "
                           "monkey keys create --name NAME")
    principal = Principal(row.id, row.name)
    state.key_cache[digest] = (principal, time.monotonic() + _KEY_CACHE_S)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
