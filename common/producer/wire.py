"""A job's Celery task message as bytes on Redis, built without kombu's producer.

The fast path (fast.py) publishes a job from the API's event loop: an LPUSH of the
message onto the queue's priority list through the asyncio client (Flower's
`task-sent` events follow in batches, `task_events`), instead of kombu's blocking
producer in a thread. Handing
work to a thread costs the event loop more than the publish itself: the GIL bounces
between them on every socket call. The bytes are exactly what the kombu path
(kombu_path.publish_job) sends through kombu's Redis transport (Celery message
protocol 2, JSON, body base64 in kombu's envelope); tests/api/test_wire.py compares
the two field by field, so a Celery or kombu upgrade that changes the format fails
there first.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery.utils.time import utcoffset

from common.constants import PRIORITY_SEP, PRIORITY_STEPS
from common.producer.base import TaskMessage

# Flower's events travel on this fanout exchange (kombu's channel "/{db}.celeryev/...").
EVENTS_EXCHANGE = "celeryev"


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()  # kombu's JSON: default separators, ASCII


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def queue_key(queue: str, priority: int) -> str:
    """The Redis list kombu keeps a queue's messages of one priority step in."""
    step = PRIORITY_STEPS[bisect.bisect(PRIORITY_STEPS, priority) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


@dataclass
class TaskWire:
    """Builds task messages and sent events for one process (its origin and clock)."""

    db: int = 0
    hostname: str = field(default_factory=lambda: f"gen{os.getpid()}@{socket.gethostname()}")
    reply_to: str = field(default_factory=lambda: str(uuid.uuid4()))
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def publish_commands(self, msg: TaskMessage) -> list[tuple[str, str, bytes]]:
        """[(redis command, key or channel, payload)] that publish the job's task: its
        message (`message_command`), and its task-sent event alone."""
        return [
            self.message_command(msg),
            ("publish", self.events_channel("task.sent"),
             self._events_message(self.task_sent(msg), "task.sent")),
        ]

    def message_command(self, msg: TaskMessage) -> tuple[str, str, bytes]:
        """("lpush", the queue's priority list, the task message)."""
        task, task_id, queue, pri = msg.task, msg.task_id, msg.queue, msg.priority_value
        args, kwargs = msg.args, msg.kwargs
        headers: dict[str, Any] = {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args), "kwargsrepr": repr(kwargs), "origin": self.hostname,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        }
        body = [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                               "chord": None}]
        message = {
            "body": _b64(_json(body)), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": headers,
            "properties": {
                "correlation_id": task_id, "reply_to": self.reply_to, "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue}, "priority": pri,
                "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
            },
        }
        return ("lpush", queue_key(queue, pri), _json(message))

    def task_sent(self, msg: TaskMessage) -> dict[str, Any]:
        """The job task's Flower `task-sent` event (Celery's fields)."""
        args, kwargs = msg.args, msg.kwargs
        return {
            "hostname": self.hostname, "utcoffset": utcoffset(), "pid": os.getpid(),
            "clock": next(self._clock), "uuid": msg.task_id, "root_id": msg.task_id,
            "parent_id": None, "name": msg.task, "args": repr(args), "kwargs": repr(kwargs),
            "retries": 0, "eta": None, "expires": None, "queue": msg.queue, "exchange": "",
            "routing_key": msg.queue, "timestamp": time.time(), "type": "task-sent",
        }

    def events_channel(self, routing_key: str) -> str:
        return f"/{self.db}.{EVENTS_EXCHANGE}/{routing_key}"

    def task_events(self, events: list[dict[str, Any]]) -> tuple[str, bytes]:
        """(channel, payload) of many task events in one message: Celery's `task.multi`,
        as a worker's event dispatcher sends a buffered group (Flower reads each)."""
        return self.events_channel("task.multi"), self._events_message(events, "task.multi")

    def _events_message(self, body: object, routing_key: str) -> bytes:
        return _json({
            "body": _b64(_json(body)), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": {"hostname": self.hostname},
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": EVENTS_EXCHANGE, "routing_key": routing_key},
                "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
            },
        })
