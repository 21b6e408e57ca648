"""Limits: request sizes (on the raw ASGI stream, before any body is parsed), request
rates per key, and open event streams per key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from redis.exceptions import NoScriptError, RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.constants import RATE_LIMIT_KEY


class BodyLimit:
    """Answers 413 when a body exceeds its limit (from Content-Length or as it streams).

    `overrides` maps a path prefix to a larger limit (file uploads).
    """

    def __init__(self, app: ASGIApp, *, limit: int, overrides: dict[str, int] | None = None):
        self.app = app
        self.limit = limit
        self.overrides = overrides or {}

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit)
                return
        seen = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not responded:
                await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": {"type": "payload_too_large", "param": None, "code": None,
                                 "message": f"request body exceeds {limit} bytes"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# A token bucket per API key in Redis, shared by every API process. Redis's own clock
# keeps several API hosts consistent. ARGV[3] tokens are asked for; the reply is
# "granted wait": up to that many (at least 1) when there are, else 0 and the seconds
# until one will be.
_BUCKET = """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted, wait = math.min(want, math.floor(tokens)), 0
if granted >= 1 then tokens = tokens - granted else granted = 0; wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(granted) .. ' ' .. tostring(wait)
"""
_BUCKET_SHA = hashlib.sha1(_BUCKET.encode()).hexdigest()

# Tokens a process takes at once, and how long it may spend them before the rest
# lapse (unspent tokens are lost, never lent on: the key's limit holds across
# processes). At the default 100/s that is 10 tokens, one round trip per 10 requests.
_HOLD_S = 0.1


class RequestTokens:
    """The per-key request limit as this API process applies it.

    A Redis cut off by a partition answers nothing, and each ask would hold its
    requests for the client's socket timeout (2 to 10 s a submit, measured). So an
    ask gets `ask_timeout_s`, far more than a healthy Redis takes, and after one went
    unanswered requests go unlimited for `quiet_s` without asking."""

    def __init__(self, *, per_s: float, burst: int, ask_timeout_s: float = 0.5,
                 quiet_s: float = 1.0):
        self.per_s = per_s
        self.burst = burst
        self.ask_timeout_s = ask_timeout_s
        self.quiet_s = quiet_s
        self._down_until = 0.0
        self.chunk = max(1, min(burst // 10, int(per_s * _HOLD_S)))
        self._held: dict[str, tuple[int, float]] = {}  # key id -> (tokens, lapse at)
        self._asking: dict[str, asyncio.Future] = {}  # key id -> its request to Redis

    async def take(self, redis_client, key_id: str) -> float:
        """0 when the request may go on, else the seconds until it may (Retry-After).
        Fails open: when Redis is unreachable, requests are not limited."""
        if self.per_s <= 0 or time.monotonic() < self._down_until:
            return 0.0
        while True:
            held, lapse = self._held.get(key_id, (0, 0.0))
            if held > 0 and time.monotonic() < lapse:
                self._held[key_id] = (held - 1, lapse)
                return 0.0
            asking = self._asking.get(key_id)
            if asking is None:
                break
            # One request asks Redis for the key's tokens at a time; the rest wait for
            # its answer (and fail open with it when Redis is unreachable).
            if not await asyncio.shield(asking):
                return 0.0
        asking = asyncio.get_running_loop().create_future()
        self._asking[key_id] = asking
        reached = False
        try:
            reply = await self._ask(redis_client, key_id)
            reached = reply is not None
        finally:
            del self._asking[key_id]
            asking.set_result(reached)
        if reply is None:
            self._down_until = time.monotonic() + self.quiet_s
            return 0.0
        granted, wait = (float(x) for x in reply.split())
        if granted < 1:
            return wait
        self._held[key_id] = (int(granted) - 1, time.monotonic() + _HOLD_S)
        return 0.0

    async def _ask(self, redis_client, key_id: str) -> bytes | None:
        args = (1, RATE_LIMIT_KEY.format(key_id=key_id), self.per_s, self.burst, self.chunk)
        try:
            async with asyncio.timeout(self.ask_timeout_s):
                try:
                    return await redis_client.evalsha(_BUCKET_SHA, *args)
                except NoScriptError:  # a fresh (or flushed) Redis: send the script itself
                    return await redis_client.eval(_BUCKET, *args)
        except (RedisError, OSError):  # TimeoutError, asyncio's too, is an OSError
            return None


class StreamSlots:
    """Open event streams per key in this API process."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, key_id: str) -> bool:
        n = self._open.get(key_id, 0)
        if self.limit and n >= self.limit:
            return False
        self._open[key_id] = n + 1
        return True

    def release(self, key_id: str) -> None:
        n = self._open.get(key_id, 1) - 1
        if n <= 0:
            self._open.pop(key_id, None)
        else:
            self._open[key_id] = n
