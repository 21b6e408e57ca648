"""All our use of kombu's Redis transport internals: its QoS, and its `unacked` hash.

1. Our transport survives a broker outage. When the connection drops while tasks run
   (acks late), kombu touches the dead connection twice, and each raises inside
   Celery's reconnect path, so the whole worker exited ("Unrecoverable error"):
   - closing the channel restores the worker's delivered messages through the very
     connection that failed (`virtual.Channel.close` -> `QoS.restore_unacked_once`);
   - a task that finishes later acknowledges its message on that closed channel
     (`redis.QoS.ack` removes it from `unacked` in Redis).
   Measured again on kombu 5.7.0: with Redis stopped, both raise ConnectionError.
   Neither is needed: jobs are recovered from the database by the reconciler
   (leases, and the messages held by a worker that is gone, below). So the channel
   closes without restoring (`do_restore`), a late ack or reject on it only does
   kombu's local bookkeeping (`virtual.QoS`, skipping the Redis QoS), and Celery
   reconnects. No transport option turns either off.

2. The reconciler rescues the jobs whose task message a dead worker had received:
   kombu keeps such a message in its `unacked` hash (delivery tag -> JSON
   `[payload, exchange, routing_key]`) and `unacked_index` sorted set (delivery
   tag -> delivery time), and restores it only after the visibility timeout. The key
   names are kombu's transport options, set to ours in common.celery_app; the
   layout of the entries and how to drop one (both keys, as kombu's own ack does)
   are kombu's internals, read here and nowhere else. `global_keyprefix` must stay
   unset: kombu would prefix these keys.

Checked against the kombu versions in CHECKED (tests/common/compat/test_kombu_redis.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from common.constants import TASK_BY_KIND

CHECKED = {"kombu": ">=5.7.0,<5.8"}

UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"
_OUR_TASKS = frozenset(TASK_BY_KIND.values())


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag: str) -> None:
        if self.channel.closed:
            virtual.QoS.ack(self, delivery_tag)  # local bookkeeping only
            return
        # kombu's QoS is unannotated; untyped_calls_exclude misses calls through super().
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.channel.closed:
            virtual.QoS.reject(self, delivery_tag, requeue=False)
            return
        super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS
    do_restore = False


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"


def job_id_of_unacked(raw: bytes | str | None) -> str | None:
    """The job id of one of our task messages in the unacked hash, else None."""
    if raw is None:  # the tag's message is gone from the hash
        return None
    try:
        headers = json.loads(raw)[0]["headers"]
        if headers.get("task") not in _OUR_TASKS:
            return None
        return str(headers["id"]).split(".", 1)[0]  # task id: "{job_id}.{attempt}"
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return None


async def stale_unacked(redis: Any, *, delivered_before: float,
                        limit: int) -> dict[str, list[bytes]]:
    """Our jobs' messages delivered before `delivered_before` (epoch seconds) and still
    unacked, oldest first: job id -> delivery tags. `redis` is a redis.asyncio client."""
    tags = await redis.zrangebyscore(UNACKED_INDEX, "-inf", delivered_before,
                                     start=0, num=limit)
    if not tags:
        return {}
    by_job: dict[str, list[bytes]] = {}
    for tag, raw in zip(tags, await redis.hmget(UNACKED_HASH, tags), strict=True):
        job_id = job_id_of_unacked(raw)
        if job_id:
            by_job.setdefault(job_id, []).append(tag)
    return by_job


async def forget_unacked(redis: Any, tags: Iterable[bytes | str]) -> None:
    """Drop messages from kombu's unacked bookkeeping, so it never delivers them again."""
    tags = list(tags)
    if tags:
        await redis.pipeline(transaction=False).zrem(UNACKED_INDEX, *tags) \
            .hdel(UNACKED_HASH, *tags).execute()


__all__ = [
    "CHECKED", "TRANSPORT", "UNACKED_HASH", "UNACKED_INDEX", "Transport",
    "forget_unacked", "job_id_of_unacked", "stale_unacked",
]
