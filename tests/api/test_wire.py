"""The fast path's task messages (common/producer/wire.py) are the ones Celery and
kombu would send (the kombu path, common/producer/kombu_path.py).

Both are published to a fresh Redis database and compared field by field; only what
differs by nature (delivery tags, reply queue, host, clock, time) may differ. A Celery
or kombu upgrade that changes the message format fails here before a worker would
refuse our messages. The end-to-end tests then run every job through the real
worker from these messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import pytest
import redis

from common.celery_app import make_celery
from common.producer import TaskMessage
from common.producer.fast import EVENTS_FLUSH_S, FastPath
from common.producer.kombu_path import publish_job
from common.producer.wire import queue_key
from common.settings import Settings
from tests.conftest import fresh_redis_url

JOBS = [
    TaskMessage(job_id="job_wire1", kind="generate", model="debug/echo", queue="llm",
                priority="interactive", attempt_hint=0),
    TaskMessage(job_id="job_wire2", kind="embed", model="local/all-MiniLM-L6-v2",
                queue="gpu", priority="batch", attempt_hint=3),
]
# Differ by nature between two senders (or two sends).
_VOLATILE_PROPS = {"delivery_tag", "reply_to"}
_VOLATILE_HEADERS = {"origin"}
_VOLATILE_EVENT = {"hostname", "clock", "timestamp", "pid"}


def _decoded(raw: bytes) -> tuple[dict, object]:
    message = json.loads(raw)
    return message, json.loads(base64.b64decode(message.pop("body")))


def _strip(message: dict) -> dict:
    props = {k: v for k, v in message["properties"].items() if k not in _VOLATILE_PROPS}
    headers = {k: v for k, v in message["headers"].items() if k not in _VOLATILE_HEADERS}
    return {**message, "properties": props, "headers": headers}


class _Events:
    """Every message published on the Redis database's channels, in a thread."""

    def __init__(self, url: str):
        self.pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("*")
        self.got: list[tuple[bytes, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.05)
            if msg and msg["type"] == "pmessage":
                self.got.append((msg["channel"], msg["data"]))

    def take(self, n: int) -> list[tuple[bytes, bytes]]:
        for _ in range(100):
            if len(self.got) >= n:
                break
            self._stop.wait(0.05)
        got, self.got = self.got[:n], self.got[n:]
        return got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


@pytest.fixture
def redis_url(redis_base):
    return fresh_redis_url(redis_base)


@pytest.mark.parametrize("job", JOBS, ids=["interactive", "batch"])
def test_our_task_message_and_sent_event_are_celerys(redis_url, job):
    r = redis.Redis.from_url(redis_url)
    events = _Events(redis_url)
    try:
        settings = Settings(REDIS_URL=redis_url, DATABASE_URL="sqlite://")
        publish_job(make_celery(settings), job)
        [(their_key, their_raw)] = [(k, r.rpop(k)) for k in r.keys("*") if r.type(k) == b"list"]
        [(their_channel, their_event)] = events.take(1)

        async def ours() -> None:
            fast = FastPath.from_settings(settings)
            await fast.send(job)
            await fast.close()

        asyncio.run(ours())
        our_key = queue_key(job.queue, 9 if job.priority == "batch" else 0)
        assert our_key.encode() == their_key
        our_raw = r.rpop(our_key)
        assert r.llen(our_key) == 0
        [(our_channel, our_event)] = events.take(1)
    finally:
        events.close()

    theirs, their_body = _decoded(their_raw)
    mine, my_body = _decoded(our_raw)
    assert my_body == their_body  # args, kwargs, embed
    assert _strip(mine) == _strip(theirs)
    assert set(mine["properties"]) == set(theirs["properties"])
    assert set(mine["headers"]) == set(theirs["headers"])

    # Celery publishes the event alone (task.sent); the fast path in Celery's batch of
    # task events (task.multi, as a worker's dispatcher does), whose items Flower reads.
    assert our_channel == their_channel.replace(b"task.sent", b"task.multi")
    their_evt, their_evt_body = _decoded(their_event)
    my_evt, [my_evt_body] = _decoded(our_event)
    assert {k: v for k, v in my_evt_body.items() if k not in _VOLATILE_EVENT} == \
        {k: v for k, v in their_evt_body.items() if k not in _VOLATILE_EVENT}
    assert set(my_evt_body) == set(their_evt_body)
    assert my_evt_body["type"] == "task-sent" and my_evt_body["uuid"] == mine["headers"]["id"]
    assert my_evt["properties"]["delivery_info"] == {"exchange": "celeryev",
                                                     "routing_key": "task.multi"}
    their_evt["properties"]["delivery_info"]["routing_key"] = "task.multi"
    assert _strip({**my_evt, "headers": {}}) == _strip({**their_evt, "headers": {}})
    assert set(my_evt["headers"]) == set(their_evt["headers"])


def test_the_fast_paths_sent_events_go_out_together(redis_url):
    """Many sends within EVENTS_FLUSH_S: one message each on the lists, and their
    task-sent events in one publish, which Celery's own event receiver reads as
    one event per task."""
    from celery.events.receiver import EventReceiver

    events = _Events(redis_url)
    try:
        async def send_all() -> None:
            fast = FastPath.from_settings(Settings(REDIS_URL=redis_url, DATABASE_URL="sqlite://"))
            for job in JOBS:
                await fast.send(job)
            await asyncio.sleep(3 * EVENTS_FLUSH_S)
            await fast.close()

        asyncio.run(send_all())
        [(channel, raw)] = events.take(1)
        assert events.take(1) == []
    finally:
        events.close()
    assert channel.endswith(b".celeryev/task.multi")
    app = make_celery(Settings(REDIS_URL=redis_url, DATABASE_URL="sqlite://"))
    got = []
    receiver = EventReceiver(app.connection_for_read(), handlers={"*": got.append}, app=app)
    message, body = _decoded(raw)
    receiver._receive(body, None)
    assert [(e["type"], e["uuid"]) for e in got] == [("task-sent", j.task_id) for j in JOBS]

