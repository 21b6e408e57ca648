"""The per-key request limit taken in chunks (api.limits.RequestTokens), on real Redis."""

from __future__ import annotations

import asyncio
import socket
import time

import redis.asyncio as aioredis

from api.limits import RequestTokens
from tests.conftest import fresh_redis_url


class CountingRedis(aioredis.Redis):
    """Counts the bucket's script calls made through this client (the server's
    commandstats would count every other client of a shared Redis too)."""

    script_calls = 0

    async def evalsha(self, *args, **kw):
        self.script_calls += 1
        return await super().evalsha(*args, **kw)

    async def eval(self, *args, **kw):
        self.script_calls += 1
        return await super().eval(*args, **kw)


def test_two_processes_never_exceed_the_keys_limit_together(redis_base):
    url = fresh_redis_url(redis_base)
    per_s, burst = 100.0, 50

    async def run() -> tuple[int, float]:
        client = aioredis.Redis.from_url(url)
        a, b = RequestTokens(per_s=per_s, burst=burst), RequestTokens(per_s=per_s, burst=burst)
        assert a.chunk == 5
        admitted, t0 = 0, time.monotonic()
        for i in range(300):
            admitted += (await (a if i % 2 else b).take(client, "key_1")) == 0
        elapsed = time.monotonic() - t0
        await client.aclose()
        return admitted, elapsed

    admitted, elapsed = asyncio.run(run())
    # Tokens come out of the one shared bucket: never more than it holds plus its refill.
    assert admitted <= burst + per_s * elapsed + 1
    # ... and at most the chunks still held when the bucket ran dry go unspent.
    assert admitted >= burst - 2 * 5


def test_a_chunk_saves_round_trips_and_lapses(redis_base):
    url = fresh_redis_url(redis_base)

    async def run() -> None:
        client = CountingRedis.from_url(url)
        tokens = RequestTokens(per_s=100.0, burst=500)
        for _ in range(10):
            assert await tokens.take(client, "key_2") == 0
        assert client.script_calls == 1  # 10 tokens taken at once, spent locally
        await asyncio.sleep(0.15)  # unspent tokens lapse: the next request asks Redis
        assert await tokens.take(client, "key_2") == 0
        assert client.script_calls == 2
        await client.aclose()

    asyncio.run(run())


def test_concurrent_requests_share_one_ask(redis_base):
    """32 requests at once: one asks Redis, the others spend what it brought back (and
    ask in turn when that is spent), so none is refused while the bucket is full."""
    url = fresh_redis_url(redis_base)

    async def run() -> tuple[list[float], int]:
        client = CountingRedis.from_url(url)
        tokens = RequestTokens(per_s=100.0, burst=500)
        waits = await asyncio.gather(*(tokens.take(client, "key_5") for _ in range(32)))
        await client.aclose()
        return waits, client.script_calls

    waits, calls = asyncio.run(run())
    assert waits == [0] * 32
    assert calls == 4  # 10 tokens an ask


def test_an_empty_bucket_says_how_long_to_wait(redis_base):
    url = fresh_redis_url(redis_base)

    async def run() -> list[float]:
        client = aioredis.Redis.from_url(url)
        tokens = RequestTokens(per_s=2.0, burst=2)
        waits = [await tokens.take(client, "key_3") for _ in range(3)]
        await client.aclose()
        return waits

    waits = asyncio.run(run())
    assert waits[:2] == [0, 0]
    assert 0 < waits[2] <= 0.5


def test_without_redis_requests_are_not_limited():
    async def run() -> list[float]:
        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        tokens = RequestTokens(per_s=1.0, burst=1)
        waits = await asyncio.gather(*(tokens.take(client, "key_4") for _ in range(5)))
        await client.aclose()
        return waits

    assert asyncio.run(run()) == [0] * 5


def test_a_redis_that_does_not_answer_holds_no_request_up():
    """A partition: Redis's port takes connections (the kernel does) and answers
    nothing. The first ask gives up after ask_timeout_s, and the requests after it go
    unlimited without asking, instead of each waiting out the socket timeout."""
    with socket.create_server(("127.0.0.1", 0)) as hole:
        async def run() -> tuple[list[float], int]:
            client = CountingRedis(port=hole.getsockname()[1], socket_timeout=2)
            tokens = RequestTokens(per_s=1.0, burst=1, ask_timeout_s=0.2, quiet_s=60)
            waits = [await tokens.take(client, "key_5") for _ in range(5)]
            await client.aclose()
            return waits, client.script_calls

        assert asyncio.run(run()) == ([0] * 5, 1)
