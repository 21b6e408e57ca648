"""Celery's consumer with Flower's task events sent in batches.

With task events on, Celery's consumer flushes its event buffer on the very next
turn of its loop after each event: three Redis publishes per task (received,
started, succeeded), made on the consumer thread while the task's own thread runs,
and every one of them takes the GIL from it. Measured on 2 cores, that put about
3 ms on every job's round trip. Here the buffer is flushed at most every
EVENTS_FLUSH_S, as one `task.multi` message (Celery's own batch format, which Flower
reads), so operators see a task's events within that interval and the job pays
nothing for them. Celery still flushes at once when 24 events wait.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

EVENTS_FLUSH_S = 0.05


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
        self._flush_events()
