"""Pins workers.compat.celery_consumer to the Celery it was checked against.

Runs Celery's own Events bootstep on our consumer with a stand-in event loop: task
events must wait in the buffer for one flush EVENTS_FLUSH_S later. An upgrade that
stops calling our hook flushes on the next turn of the loop, and fails here.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from celery import Celery
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.events import Events
from packaging.specifiers import SpecifierSet

from common.settings import Settings
from workers.app import make_worker_app
from workers.compat import celery_consumer as compat


class _Hub:
    """The two calls our consumer makes on kombu's Hub, recorded."""

    def __init__(self) -> None:
        self.soon: list = []
        self.later: list = []

    def call_soon(self, callback, *args):
        self.soon.append(callback)

    def call_later(self, delay, callback, *args):
        self.later.append((delay, callback))

    def run_soon(self) -> None:
        ready, self.soon = self.soon, []
        for callback in ready:
            callback()


def test_installed_celery_is_the_checked_one():
    assert version("celery") in SpecifierSet(compat.CHECKED["celery"]), (
        "Celery left the range workers/compat/celery_consumer.py was checked against: "
        "re-read the code it names, then move CHECKED")


def test_the_worker_runs_our_consumer():
    app = make_worker_app(Settings())
    assert app.conf.worker_consumer == compat.CONSUMER
    assert issubclass(compat.Consumer, CeleryConsumer)
    assert list(inspect.signature(CeleryConsumer.on_send_event_buffered).parameters) == ["self"]


def _consumer_with_events(hub: _Hub):
    app = Celery("pin", broker="memory://", set_as_current=False)
    c = compat.Consumer.__new__(compat.Consumer)  # only what the Events step reads
    c.app, c.hub, c.hostname, c.amqheartbeat = app, hub, "pin@test", 0
    c.connection_for_write = lambda heartbeat=None: app.connection_for_write()
    Events(c, task_events=True).start(c)
    flushes: list[int] = []
    flush = c.event_dispatcher.flush

    def counted(*args, **kwargs):
        flushes.append(1)
        return flush(*args, **kwargs)

    c.event_dispatcher.flush = counted
    return c, flushes


def test_task_events_wait_for_one_batched_flush():
    hub = _Hub()
    c, flushes = _consumer_with_events(hub)
    for event in ("task-received", "task-started", "task-succeeded"):
        c.event_dispatcher.send(event, uuid="job_pin.0")
    assert len(hub.soon) == 1, "Celery no longer calls on_send_event_buffered per event"
    hub.run_soon()
    assert flushes == [], "flushed on the next turn of the loop, not batched"
    [(delay, flush_later)] = hub.later
    assert delay == compat.EVENTS_FLUSH_S

    c.event_dispatcher.send("task-received", uuid="job_pin.1")
    assert hub.soon == [] and len(hub.later) == 1, "one flush pending at a time"
    flush_later()
    assert flushes == [1]
    c.event_dispatcher.send("task-started", uuid="job_pin.1")
    assert len(hub.soon) == 1, "after a flush the next event schedules the next one"
    c.event_dispatcher.close()
