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


async def create_api_key(settings: Settings, name: str) -> str:
    """Store a new key for `name` (hashed) and return the key itself, shown once."""
    from common.db import ApiKey, async_sessions, make_async_engine
    from common.ids import new_id

    key = generate_key()
    engine = make_async_engine(settings)
    try:
        async with async_sessions(engine)() as session:
            session.add(ApiKey(id=new_id("key"), name=name, key_hash=hash_key(key),
                               prefix=key[:8]))
            await session.commit()
    finally:
        await engine.dispose()
    return key
