"""The kombu path: many job tasks at once, through Celery's own producer.

A batch's lines and the reconciler's sends go out over one producer connection per
call, pipelined (kombu's publish batch, where the installed kombu has it). It blocks:
CeleryProducer runs it in a thread. `publish_job` is the reference message that
tests/api/test_wire.py compares the fast path's bytes with.

No Flower "task-sent" event here: that event is one more Redis round trip per message,
which would halve the rate for 50,000 lines. Flower still sees each task when a
worker receives it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext

from celery import Celery
from kombu.messaging import Producer as KombuProducer

from common.celery_app import make_celery
from common.producer.base import TaskMessage
from common.settings import Settings

PIPELINE = 500


def publish_job(app: Celery, msg: TaskMessage, producer: KombuProducer | None = None) -> None:
    """Send the job's task through Celery. Blocks for about a millisecond (more when
    Redis is slow): never call it on an event loop thread. Raises kombu's
    OperationalError when Redis is unreachable. `producer` sends through one open
    producer (many messages, one connection)."""
    app.send_task(msg.task, args=msg.args, kwargs=msg.kwargs, queue=msg.queue,
                  routing_key=msg.queue, priority=msg.priority_value, task_id=msg.task_id,
                  retry=False, producer=producer)


class KombuPath:
    def __init__(self, settings: Settings):
        self.app = make_celery(settings)
        self.app.conf.task_send_sent_event = False
        self._pool_lock = threading.Lock()

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        """Send these tasks. Raises kombu/redis errors when the broker is unreachable."""
        with self._pool_lock:  # Celery builds its producer pool on first use, unlocked
            self.app.producer_pool  # noqa: B018 - built here, in one thread at a time
        with self.app.producer_or_acquire() as producer:
            batch = getattr(producer, "batch", None)
            with batch(max_size=PIPELINE) if batch else nullcontext():
                for msg in messages:
                    publish_job(self.app, msg, producer=producer)

    def close(self) -> None:
        self.app.close()
