"""A job's Celery task message as bytes on Redis, built without kombu's producer.

The fast path (fast.py) publishes a job from the API's event loop: one Redis pipeline
(LPUSH the message onto the queue's priority list, PUBLISH Flower's `task-sent` event)
through the asyncio client, instead of kombu's blocking producer in a thread. Handing
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
        """[(redis command, key or channel, payload)] that publish the job's task."""
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
        return [
            ("lpush", queue_key(queue, pri), _json(message)),
            ("publish", f"/{self.db}.{EVENTS_EXCHANGE}/task.sent",
             self._sent_event(task, task_id, args, kwargs, queue)),
        ]

    def _sent_event(self, task: str, task_id: str, args: list[Any], kwargs: dict[str, Any],
                    queue: str) -> bytes:
        event = {
            "hostname": self.hostname, "utcoffset": utcoffset(), "pid": os.getpid(),
            "clock": next(self._clock), "uuid": task_id, "root_id": task_id,
            "parent_id": None, "name": task, "args": repr(args), "kwargs": repr(kwargs),
            "retries": 0, "eta": None, "expires": None, "queue": queue, "exchange": "",
            "routing_key": queue, "timestamp": time.time(), "type": "task-sent",
        }
        return _json({
            "body": _b64(_json(event)), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": {"hostname": self.hostname},
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": EVENTS_EXCHANGE, "routing_key": "task.sent"},
                "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
            },
        })

