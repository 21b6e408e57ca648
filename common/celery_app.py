"""The Celery app, producer side: queues, routing and task names. The API sends tasks
by name through it; the worker builds its app from the same config and adds the task
bodies (`make_worker_app` in workers/app.py)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from common.compat.kombu_redis import TRANSPORT, UNACKED_HASH, UNACKED_INDEX
from common.constants import QUEUES
from common.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        # A plain redis:// URL, as every stock Celery tool and Flower read it; the
        # transport class is chosen by `broker_transport`, which kombu's Connection
        # prefers to the URL's scheme: kombu's Redis transport without its
        # restore-on-close (common/compat/kombu_redis.py). Same keys, same wire.
        "broker_url": settings.redis_url,
        "broker_transport": TRANSPORT,
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],
        "task_default_queue": QUEUES[1],
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # A message stays on the broker until the task body returned; a worker that dies
        # leaves it unacked (the lease and reconciler requeue the job long before kombu does).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Flower: task events and the sent event (queue-wait times).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2,
        "broker_transport_options": {
            # Must be the same in every process on this Redis database.
            "visibility_timeout": settings.visibility_timeout_s,
            # Named here because the reconciler reads them (common/compat/kombu_redis.py).
            "unacked_key": UNACKED_HASH,
            "unacked_index_key": UNACKED_INDEX,
            # Per-queue priority lists: interactive (0) is served before batch (9).
            # `priority_steps` and `sep` stay kombu's defaults (common/constants.py):
            # stock clients name the lists and binding entries with those.
            "queue_order_strategy": "priority",
            "socket_connect_timeout": 2,
            "socket_timeout": 10,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
    }


def make_celery(settings: Settings) -> Celery:
    app = Celery("monkey", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
