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
import redis
import redis.asyncio as aioredis
from kombu import Consumer, Queue
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from packaging.specifiers import SpecifierSet
from redis.exceptions import ConnectionError as RedisConnectionError

from common.celery_app import celery_config, make_celery
from common.compat import kombu_redis as compat
from common.constants import PRIORITY_SEP, PRIORITY_STEPS, QUEUES
from common.producer import TaskMessage
from common.producer.kombu_path import publish_job
from common.producer.wire import TaskWire
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
        assert _params(qos.append) == [("self", empty), ("message", empty),
                                       ("delivery_tag", empty)]
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


def test_a_redis_url_keeps_our_transport_with_kombus_default_layout():
    """broker_transport wins over the URL's scheme (kombu's Connection takes the scheme
    only when no transport is given), and the layout is the one stock clients assume."""
    settings = Settings(redis_url="redis://127.0.0.1:6399/3")
    assert celery_config(settings)["broker_url"] == "redis://127.0.0.1:6399/3"
    conn = make_celery(settings).connection_for_write()
    assert conn.transport_cls == compat.TRANSPORT
    assert conn.transport.Channel is compat.Channel
    assert (conn.hostname, conn.port, conn.virtual_host) == ("127.0.0.1", 6399, "3")
    topts = celery_config(settings)["broker_transport_options"]
    assert not {"sep", "priority_steps"} & set(topts), "stock clients use kombu's defaults"
    assert PRIORITY_SEP == kombu_redis.Channel.sep
    assert list(PRIORITY_STEPS) == kombu_redis.PRIORITY_STEPS == kombu_redis.Channel.priority_steps
    # What adopt_legacy_layout and get_table lean on.
    assert compat.Channel.keyprefix_queue == "_kombu.binding.%s"
    assert compat.Channel.keyprefix_binding_permanent == "_kombu.binding_permanent.%s"
    assert _params(kombu_redis.Channel.get_table) == [("self", inspect.Parameter.empty),
                                                     ("exchange", inspect.Parameter.empty)]


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


def _deliver(app, n: int, *, recorded: bool = True):
    """A consumer on our transport that received n messages and acked none; with
    `recorded`, once their unacked entries are written (QOS_DEFER_S after delivery)."""
    conn = app.connection_for_read()
    channel = conn.channel()
    channel.basic_qos(0, n, False)
    got = []
    consumer = Consumer(channel, [Queue("llm", routing_key="llm")], accept=["json"],
                        callbacks=[lambda _body, message: got.append(message)])
    consumer.consume()
    while len(got) < n:
        conn.drain_events(timeout=5)
    if recorded:
        r = redis.Redis.from_url(app.conf.broker_url)
        deadline = time.monotonic() + 5
        while r.hlen(compat.UNACKED_HASH) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    return conn, channel, got


def _bookkeeping_calls(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in ("zadd", "hset", "zrem", "hdel")}


def _publish(app, *job_ids: str) -> None:
    for job_id in job_ids:
        publish_job(app, TaskMessage(job_id=job_id, kind="generate", model="debug/echo",
                                     queue="llm", priority="interactive"))


def test_a_message_acked_soon_after_delivery_costs_no_bookkeeping(redis_server, monkeypatch):
    monkeypatch.setattr(compat, "QOS_DEFER_S", 0.5)  # room for a loaded machine
    app = make_celery(Settings(redis_url=redis_server.url))
    _publish(app, "job_quick")
    r = redis.Redis.from_url(redis_server.url)
    before = _bookkeeping_calls(r)
    conn, _channel, (quick,) = _deliver(app, 1, recorded=False)
    quick.ack()
    time.sleep(3 * compat.QOS_DEFER_S)
    assert _bookkeeping_calls(r) == before
    assert not r.exists(compat.UNACKED_HASH, compat.UNACKED_INDEX)
    conn.release()


def test_the_bookkeeping_of_held_messages_is_written_late_without_multi(redis_server):
    """Held past QOS_DEFER_S: entries as kombu's own (the reconciler parses them),
    many to a command; a requeue finds its entry."""
    app = make_celery(Settings(redis_url=redis_server.url))
    _publish(app, "job_x", "job_y", "job_z")
    r = redis.Redis.from_url(redis_server.url)
    before = _bookkeeping_calls(r)
    conn, _channel, (x, y, z) = _deliver(app, 3)
    assert set(r.hkeys(compat.UNACKED_HASH)) == {m.delivery_tag.encode() for m in (x, y, z)}
    assert {compat.job_id_of_unacked(raw) for raw in r.hvals(compat.UNACKED_HASH)} == {
        "job_x", "job_y", "job_z"}
    x.ack()
    y.ack()
    z.reject(requeue=True)  # kombu restores it from its entry, onto the list again
    deadline = time.monotonic() + 5
    while r.exists(compat.UNACKED_HASH) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not r.exists(compat.UNACKED_HASH, compat.UNACKED_INDEX)
    assert [compat.job_id_of_message(m) for m in r.lrange("llm", 0, -1)] == ["job_z"]
    calls = {k: v - before[k] for k, v in _bookkeeping_calls(r).items()}
    assert calls["zadd"] == calls["hset"] >= 1 and calls["zadd"] <= 3
    assert calls["zrem"] >= 1 and calls["hdel"] >= 1
    conn.release()


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


def test_a_chunk_parses_to_every_line_it_carries(redis_server):
    # A chunk waiting on its list or held by a worker that died: the reconciler and the
    # lost-message census must see each of its lines, not only the first, or the
    # others would be sent again (or wait for the visibility timeout).
    app = make_celery(Settings(redis_url=redis_server.url))
    rows = [{"id": f"job_{c}", "kind": "generate", "model": "debug/echo", "queue": "llm",
             "priority": "batch"} for c in "uvwxyz"]
    publish_job(app, TaskMessage.chunk(rows[:3]))
    conn, _channel, messages = _deliver(app, 1)
    tag = messages[0].delivery_tag.encode()
    publish_job(app, TaskMessage.chunk(rows[3:]))
    key = compat.queue_lists(["llm"])[-1]

    async def check() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            held = await compat.stale_unacked(r, delivered_before=time.time() + 1, limit=10)
            assert held == {"job_u": [tag], "job_v": [tag], "job_w": [tag]}
            assert await compat.unacked_job_ids(r) == {"job_u", "job_v", "job_w"}
            assert await compat.job_ids_on_list(r, key, 0, 10) == (
                ["job_x", "job_y", "job_z"], 1)
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


def test_a_binding_written_with_another_separator_cuts_no_one_off(redis_server):
    """A control reply goes through the reply exchange's binding table: kombu's own
    lookup fails on a member it cannot split; ours skips it and still routes."""
    app = make_celery(Settings(redis_url=redis_server.url))
    r = redis.Redis.from_url(redis_server.url)
    table = "_kombu.binding.reply.celery.pidbox"
    r.sadd(table, "ticket-a::a.reply.celery.pidbox",
           PRIORITY_SEP.join(["ticket-b", "", "b.reply.celery.pidbox"]))
    with app.connection_for_write() as conn:
        ours = conn.default_channel
        assert ours.get_table("reply.celery.pidbox") == [
            ("ticket-b", "", "b.reply.celery.pidbox")]
        assert ours._lookup("reply.celery.pidbox", "ticket-b") == {"b.reply.celery.pidbox"}
    app.conf.broker_transport = "redis"
    with app.connection_for_write() as conn, pytest.raises(ValueError):
        conn.default_channel._lookup("reply.celery.pidbox", "ticket-b")


def test_the_legacy_layout_moves_to_kombus_default_once(redis_server):
    r = redis.Redis.from_url(redis_server.url)
    batch = f"llm{PRIORITY_SEP}9"
    r.lpush("llm:9", "old1", "old2")      # old1 is the oldest: served first
    r.lpush(batch, "new1")
    r.lpush("gpu:9", "g1")
    r.set("llm:3", "not ours")            # no legacy step: untouched
    r.sadd("_kombu.binding.llm", "llm::llm", PRIORITY_SEP.join(["llm", "", "llm"]))
    r.sadd("_kombu.binding_permanent.llm", "llm::llm")
    assert compat.adopt_legacy_layout(r) == [3, 2]
    assert [r.rpop(batch) for _ in range(4)] == [b"old1", b"old2", b"new1", None]
    assert r.lrange(f"gpu{PRIORITY_SEP}9", 0, -1) == [b"g1"]
    assert not r.exists("llm:9", "gpu:9")
    assert r.get("llm:3") == b"not ours"
    assert r.smembers("_kombu.binding.llm") == {PRIORITY_SEP.join(["llm", "", "llm"]).encode()}
    assert not r.exists("_kombu.binding_permanent.llm")
    assert compat.adopt_legacy_layout(r) == [0, 0]

    async def from_the_event_loop() -> list[int]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.lpush("gpu:9", "g2")
            return await compat.adopt_legacy_layout(client)
        finally:
            await client.aclose()

    assert asyncio.run(from_the_event_loop()) == [1, 0]
    assert r.lrange(f"gpu{PRIORITY_SEP}9", 0, -1) == [b"g1", b"g2"]


def test_the_lists_we_sweep_are_the_ones_kombu_pushes_to():
    channel = make_celery(Settings()).connection_for_write().default_channel
    expected = [channel._q_for_pri(queue, step) for queue in ("gpu", "llm")
                for step in PRIORITY_STEPS]
    assert compat.queue_lists(["gpu", "llm"]) == expected
    assert compat.queue_lists() == compat.queue_lists(QUEUES)


@pytest.mark.parametrize("raw", [
    None, b"", b"not json", b"{}", b'{"headers": {}}',
    b'{"body": "", "headers": {"task": "other.task", "id": "x.0"}}',
])
def test_anything_but_our_task_message_on_a_list_is_no_job(raw):
    assert compat.job_id_of_message(raw) is None


def test_messages_on_the_lists_and_in_unacked_parse_to_their_jobs(redis_server):
    """Both producers' bytes (kombu's and the fast path's) parse to the job, by the
    fast path of the parser; a message a consumer holds moves from the counts of the
    lists to those of the hash, and its job with it."""
    app = make_celery(Settings(redis_url=redis_server.url))
    for job_id, priority in (("job_a", "interactive"), ("job_b", "batch"), ("job_c", "batch")):
        publish_job(app, TaskMessage(job_id=job_id, kind="generate", model="debug/echo",
                                     queue="llm", priority=priority, attempt_hint=3))
    r = redis.Redis.from_url(redis_server.url)
    (_cmd, key, wire_raw), _event = TaskWire().publish_commands(TaskMessage(
        job_id="job_d", kind="embed", model="local/x", queue="llm", priority="batch"))
    r.lpush(key, wire_raw)
    for raw in [*r.lrange(key, 0, -1), *r.lrange("llm", 0, -1)]:
        assert compat._TASK_RE.search(raw) and compat._ID_RE.search(raw)  # no JSON needed
    conn, _channel, _messages = _deliver(app, 1)  # the interactive one: job_a

    async def check() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            assert await compat.message_counts(client, compat.queue_lists(["llm"])) == (3, 1)
            assert await compat.unacked_job_ids(client) == {"job_a"}
            assert await compat.job_ids_on_list(client, key, 0, 2) == (["job_d", "job_c"], 2)
            assert await compat.job_ids_on_list(client, key, 2, 2) == (["job_b"], 1)
            assert await compat.job_ids_on_list(client, "llm", 0, 10) == ([], 0)
        finally:
            await client.aclose()

    asyncio.run(check())
    conn.release()
