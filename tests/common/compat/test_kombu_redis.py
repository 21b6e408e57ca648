"""Pins common.compat.kombu_redis to the kombu it was checked against.

An upgrade fails here when kombu leaves CHECKED, when a class, attribute or signature
the module leans on changes, when the unacked entries no longer parse to our job ids,
or when plain kombu stops touching a dead connection (then our transport may go).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from importlib.metadata import version

import pytest
import redis.asyncio as aioredis
from kombu import Consumer, Queue
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from packaging.specifiers import SpecifierSet
from redis.exceptions import ConnectionError as RedisConnectionError

from common.celery_app import celery_config, make_celery
from common.compat import kombu_redis as compat
from common.producer import TaskMessage
from common.producer.kombu_path import publish_job
from common.settings import Settings
from monkey.embedded import EmbeddedRedis

pytestmark = pytest.mark.timeout(30)


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_installed_kombu_is_the_checked_one():
    assert version("kombu") in SpecifierSet(compat.CHECKED["kombu"]), (
        "kombu left the range common/compat/kombu_redis.py was checked against: "
        "re-read the code it names, then move CHECKED")


def test_the_internals_it_leans_on_keep_their_shape():
    empty = inspect.Parameter.empty
    assert issubclass(kombu_redis.QoS, virtual.QoS)
    for qos in (kombu_redis.QoS, virtual.QoS):
        assert _params(qos.ack) == [("self", empty), ("delivery_tag", empty)]
        assert _params(qos.reject) == [("self", empty), ("delivery_tag", empty),
                                       ("requeue", False)]
    # What they do (restore on close, ack through Redis) is pinned by the outage test.
    assert virtual.Channel.do_restore is True
    assert {"unacked_key", "unacked_index_key"} <= set(kombu_redis.Channel.from_transport_options)


def test_celery_uses_our_transport_and_our_unacked_names():
    options = celery_config(Settings())
    assert options["broker_transport"] == compat.TRANSPORT
    topts = options["broker_transport_options"]
    assert topts["unacked_key"] == compat.UNACKED_HASH
    assert topts["unacked_index_key"] == compat.UNACKED_INDEX
    assert not topts.get("global_keyprefix"), "kombu would prefix the unacked keys"


@pytest.mark.parametrize("raw", [
    None, b"", b"not json", b"{}", b"[]", b'[{"headers": null}]', b'[{"headers": {}}]',
    b'[{"headers": {"task": "other.task", "id": "x.0"}}, "", "llm"]',
])
def test_anything_but_our_task_message_is_no_job(raw):
    assert compat.job_id_of_unacked(raw) is None


@pytest.fixture
def redis_server(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _deliver(app, n: int):
    """A consumer on our transport that received n messages and acked none."""
    conn = app.connection_for_read()
    channel = conn.channel()
    channel.basic_qos(0, n, False)
    got = []
    consumer = Consumer(channel, [Queue("llm", routing_key="llm")], accept=["json"],
                        callbacks=[lambda _body, message: got.append(message)])
    consumer.consume()
    while len(got) < n:
        conn.drain_events(timeout=5)
    return conn, channel, got


def test_messages_a_worker_holds_parse_to_their_jobs_and_can_be_dropped(redis_server):
    app = make_celery(Settings(redis_url=redis_server.url))
    for job_id in ("job_a", "job_b"):
        publish_job(app, TaskMessage(job_id=job_id, kind="generate", model="debug/echo",
                                     queue="llm", priority="interactive", attempt_hint=2))
    conn, _channel, messages = _deliver(app, 2)
    tags = {m.headers["id"].split(".")[0]: m.delivery_tag.encode() for m in messages}

    async def check() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            held = await compat.stale_unacked(r, delivered_before=time.time() + 1, limit=10)
            assert held == {job: [tag] for job, tag in tags.items()}
            assert await compat.stale_unacked(r, delivered_before=time.time() - 60,
                                              limit=10) == {}
            await compat.forget_unacked(r, [tags["job_a"]])
            await compat.forget_unacked(r, [])
            assert await r.hkeys(compat.UNACKED_HASH) == [tags["job_b"]]
            assert await r.zrange(compat.UNACKED_INDEX, 0, -1) == [tags["job_b"]]
        finally:
            await r.aclose()

    asyncio.run(check())
    conn.release()


@pytest.mark.parametrize("transport", ["redis", compat.TRANSPORT])
def test_a_channel_closed_on_a_dead_broker(redis_server, transport):
    """Ours closes quietly and drops a late ack or reject; kombu's own still touches the
    dead connection for each. When that passes for "redis", our transport may go."""
    app = make_celery(Settings(redis_url=redis_server.url))
    app.conf.broker_transport = transport
    for job_id in ("job_c", "job_d"):
        publish_job(app, TaskMessage(job_id=job_id, kind="generate", model="debug/echo",
                                     queue="llm", priority="interactive"))
    conn, channel, (first, second) = _deliver(app, 2)
    redis_server.stop()
    late = [channel.close, first.ack, lambda: second.reject(requeue=True)]
    for call in late:
        if transport == "redis":
            with pytest.raises(RedisConnectionError):
                call()
        else:
            call()
    conn.release()
