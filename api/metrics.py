"""Prometheus metrics of the API process."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS_SUBMITTED = Counter(
    "monkey_jobs_submitted_total", "Jobs accepted by the API", ["kind", "model", "priority"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "monkey_queue_depth", "Queued jobs", ["queue", "priority"], registry=REGISTRY
)
QUEUE_OLDEST = Gauge(
    "monkey_queue_oldest_age_seconds", "Age of the oldest queued job", ["queue", "priority"],
    registry=REGISTRY,
)
RUNNING = Gauge("monkey_jobs_running", "Jobs running now", ["queue"], registry=REGISTRY)
WORKERS = Gauge("monkey_workers", "Live workers per queue", ["queue"], registry=REGISTRY)


def observe_queues(stats: list[dict]) -> None:
    for q in stats:
        RUNNING.labels(q["queue"]).set(q["running"])
        WORKERS.labels(q["queue"]).set(q["workers"])
        for prio, p in q["priorities"].items():
            QUEUE_DEPTH.labels(q["queue"], prio).set(p["depth"])
            QUEUE_OLDEST.labels(q["queue"], prio).set(p["oldest_age_s"] or 0)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
