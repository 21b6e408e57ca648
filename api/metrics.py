"""Prometheus metrics of the API process, and the queue gauges that autoscalers read.

The queue gauges cost a few Redis round trips and three grouped SELECTs; Prometheus
and KEDA each scrape every API replica, so they are computed at most once per
`MONKEY_QUEUE_METRICS_TTL_S` per process (`QueueGauges`), and concurrent scrapes
share one computation. See api/services/queues.py for what each figure counts.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from sqlalchemy.ext.asyncio import async_sessionmaker

from api.services.queues import broker_stats, queue_stats

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS_SUBMITTED = Counter(
    "monkey_jobs_submitted_total", "Jobs accepted by the API", ["kind", "model", "priority"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "monkey_queue_depth", "Queued jobs (database): in the broker, prefetched or unpublished",
    ["queue", "priority"], registry=REGISTRY
)
QUEUE_OLDEST = Gauge(
    "monkey_queue_oldest_age_seconds", "Age of the oldest queued job", ["queue", "priority"],
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "monkey_queue_messages", "Task messages waiting in the broker's Redis lists",
    ["queue", "priority"], registry=REGISTRY,
)
QUEUE_PREFETCHED = Gauge(
    "monkey_queue_prefetched", "Task messages live workers received but have not started",
    ["queue", "priority"], registry=REGISTRY,
)
QUEUE_RUNNING = Gauge(
    "monkey_queue_running", "Jobs running (or being cancelled)", ["queue", "priority"],
    registry=REGISTRY,
)
RUNNING = Gauge("monkey_jobs_running", "Jobs running now", ["queue"], registry=REGISTRY)
WORKERS = Gauge("monkey_workers", "Live workers per queue", ["queue"], registry=REGISTRY)
GAUGES_COMPUTED = Counter(
    "monkey_queue_gauges_computed_total", "Computations of the queue gauges",
    registry=REGISTRY,
)
GAUGES_SECONDS = Gauge(
    "monkey_queue_gauges_compute_seconds", "Time the last computation of the queue gauges took",
    registry=REGISTRY,
)


def observe_queues(stats: list[dict]) -> None:
    for q in stats:
        RUNNING.labels(q["queue"]).set(q["running"])
        WORKERS.labels(q["queue"]).set(q["workers"])
        for prio, p in q["priorities"].items():
            QUEUE_DEPTH.labels(q["queue"], prio).set(p["depth"])
            QUEUE_OLDEST.labels(q["queue"], prio).set(p["oldest_age_s"] or 0)


def observe_broker(stats: dict[tuple[str, str], dict[str, int]]) -> None:
    for (queue, prio), s in stats.items():
        QUEUE_MESSAGES.labels(queue, prio).set(s["messages"])
        QUEUE_PREFETCHED.labels(queue, prio).set(s["prefetched"])
        QUEUE_RUNNING.labels(queue, prio).set(s["running"])


class QueueGauges:
    """Refreshes the queue gauges at most once per `ttl_s`; a scrape in between serves
    the last values (Prometheus scrapes every 15 to 60 s, KEDA polls every 30 s)."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self, *, sessions: async_sessionmaker, redis: aioredis.Redis) -> None:
        async with self._lock:  # a scrape that waited finds the values fresh
            if time.monotonic() - self._at < self.ttl_s:
                return
            started = time.perf_counter()
            observe_queues(await queue_stats(sessions=sessions, redis=redis))
            observe_broker(await broker_stats(sessions=sessions, redis=redis))
            GAUGES_SECONDS.set(time.perf_counter() - started)
            GAUGES_COMPUTED.inc()
            self._at = time.monotonic()


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
