"""All our use of Celery's internals: the consumer, with Flower's task events batched.

With task events on, Celery's consumer flushes its event buffer on the very next
turn of its loop after each event: three Redis publishes per task (received,
started, succeeded), made on the consumer thread while the task's own thread runs,
and every one of them takes the GIL from it. Measured on 2 cores, that put about
3 ms on every job's round trip. Here the buffer is flushed at most every
EVENTS_FLUSH_S, as one `task.multi` message (Celery's own batch format, which Flower
reads), so operators see a task's events within that interval and the job pays
nothing for them. Celery still flushes at once when 24 events wait. Half a second:
at 50 ms, a client that runs its jobs one after another (a job every 20 ms or more)
still cost a publish per job.

A custom consumer class is a documented setting (`worker_consumer`), and so are the
consumer's `hub` and `event_dispatcher`; what is not is the hook overridden here:
the Events bootstep hands `Consumer.on_send_event_buffered` to its EventDispatcher,
which calls it after buffering each task event (celery/worker/consumer/events.py,
consumer.py). No setting or bootstep changes when that buffer is flushed.

Checked against the Celery versions in CHECKED (tests/workers/compat/).
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

CHECKED = {"celery": ">=5.7.0,<5.8"}
EVENTS_FLUSH_S = 0.5


class Consumer(CeleryConsumer):
    _flush_scheduled = False

    def on_send_event_buffered(self) -> None:
        # Called from task threads too: hand over to the loop as Celery does
        # (call_soon), and set the timer from there.
        if self.hub and not self._flush_scheduled:
            self._flush_scheduled = True
            self.hub.call_soon(self._schedule_flush)

    def _schedule_flush(self) -> None:
        self.hub.call_later(EVENTS_FLUSH_S, self._flush_batched)

    def _flush_batched(self) -> None:
        self._flush_scheduled = False
        if self.event_dispatcher:
            self.event_dispatcher.flush()


CONSUMER = f"{__name__}:Consumer"

__all__ = ["CHECKED", "CONSUMER", "EVENTS_FLUSH_S", "Consumer"]
