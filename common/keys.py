"""API keys: random, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings

KEY_PREFIX = "mk-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


MAX_WEIGHT = 1000.0


def check_weight(weight: float) -> float:
    """A key's weight: its share of the queue against other busy keys (1 is the default
    share; 2 advances twice as fast as 1 when both have work waiting)."""
    if not 0 < weight <= MAX_WEIGHT:  # NaN fails this too
        raise ValueError(f"a key's weight must be above 0 and at most {MAX_WEIGHT:g}, "
                         f"not {weight!r}")
    return weight


async def create_api_key(settings: Settings, name: str, weight: float = 1.0) -> str:
    """Store a new key for `name` (hashed) and return the key itself, shown once."""
    from common.db import ApiKey, async_sessions, make_async_engine
    from common.ids import new_id

    check_weight(weight)
    key = generate_key()
    engine = make_async_engine(settings)
    try:
        async with async_sessions(engine)() as session:
            session.add(ApiKey(id=new_id("key"), name=name, key_hash=hash_key(key),
                               prefix=key[:8], weight=weight))
            await session.commit()
    finally:
        await engine.dispose()
    return key


async def set_key_weight(settings: Settings, key: str, weight: float) -> list[str]:
    """Set the weight of the key named `key` (its id, or its name when that names one
    key alone); returns the ids changed. The API sees it within its key cache's 10 s."""
    from sqlalchemy import or_, select, update

    from common.db import ApiKey, async_sessions, make_async_engine

    check_weight(weight)
    engine = make_async_engine(settings)
    try:
        async with async_sessions(engine)() as session:
            ids = list((await session.execute(select(ApiKey.id).where(
                or_(ApiKey.id == key, ApiKey.name == key)))).scalars())
            if len(ids) > 1:
                raise ValueError(f"{len(ids)} keys are named {key!r}: give the key's id")
            if ids:
                await session.execute(update(ApiKey).where(ApiKey.id == ids[0])
                                      .values(weight=weight))
                await session.commit()
    finally:
        await engine.dispose()
    return ids
