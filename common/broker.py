"""Our Redis transport for Celery: kombu's, made to survive a broker outage.

When the connection drops while tasks run (acks late), kombu 5.x touches the closed
channel twice, and each raises AttributeError inside Celery's reconnect path, so the
whole worker exits ("Unrecoverable error"):
- closing the channel restores the worker's delivered messages through the very
  connection that failed;
- a task that finishes later acknowledges its message on that closed channel.
Neither is needed: jobs are recovered from the database by the reconciler (leases,
and the messages held by a worker that is gone, which it takes out of `unacked`).
So the channel closes without restoring, a late ack on it is dropped, and Celery
reconnects.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag) -> None:
        if self.channel.closed:
            virtual.QoS.ack(self, delivery_tag)  # local bookkeeping only
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue: bool = False) -> None:
        if self.channel.closed:
            virtual.QoS.reject(self, delivery_tag, requeue=False)
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_redis.Channel):
    QoS = QoS
    do_restore = False


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
