"""Prometheus metrics of a worker process, served on MONKEY_METRICS_PORT.

Jobs finished by kind, model and status; queue wait, run time, time to first token
and tokens per second as histograms; provider retries and job errors by type. The
local runtime adds its batch metrics to the same (default) registry.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

from workers.hooks import Hooks
from workers.runtimes.base import JobSpec

log = logging.getLogger("monkey.worker")

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

JOBS = Counter("monkey_jobs_total", "Jobs finished by this worker",
               ["kind", "model", "status"])
ERRORS = Counter("monkey_job_errors_total", "Failed jobs by error type", ["model", "type"])
QUEUE_WAIT = Histogram("monkey_job_queue_wait_seconds", "Submit to start of the last attempt",
                       ["queue"], buckets=_SECONDS)
RUN_TIME = Histogram("monkey_job_run_seconds", "Run time of the finishing attempt",
                     ["kind", "model"], buckets=_SECONDS)
TTFT = Histogram("monkey_time_to_first_token_seconds", "Start of a run to its first token",
                 ["model"], buckets=_SECONDS)
TOKENS_PER_S = Histogram("monkey_tokens_per_second", "Completion tokens per second of run time",
                         ["model"], buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000))
PROVIDER_RETRIES = Counter("monkey_provider_retries_total", "Retried provider calls",
                           ["provider", "type"])


class MetricsHooks(Hooks):
    def __init__(self, queue: str):
        self.queue = queue

    def finished(self, spec: JobSpec, envelope: dict) -> None:
        JOBS.labels(spec.kind, spec.model, envelope["status"]).inc()
        if envelope.get("error"):
            ERRORS.labels(spec.model, envelope["error"]["type"]).inc()
        m = envelope.get("metrics") or {}
        if m.get("queue_ms") is not None:
            QUEUE_WAIT.labels(self.queue).observe(m["queue_ms"] / 1000)
        if m.get("run_ms") is not None:
            RUN_TIME.labels(spec.kind, spec.model).observe(m["run_ms"] / 1000)
        if m.get("ttft_ms") is not None:
            TTFT.labels(spec.model).observe(m["ttft_ms"] / 1000)
        if m.get("tokens_per_s"):
            TOKENS_PER_S.labels(spec.model).observe(m["tokens_per_s"])

    def retried(self, spec: JobSpec, error_type: str) -> None:
        PROVIDER_RETRIES.labels(spec.provider, error_type).inc()


def serve(port: int | None) -> None:
    if port:
        start_http_server(port, addr="::")
        log.info("worker metrics on port %s", port)
