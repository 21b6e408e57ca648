"""Prometheus metrics of the local runtime (the default registry, scraped at the worker).

Only prometheus_client is imported here, so the module is cheap and torch-free.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

BATCH_SIZE = Histogram(
    "monkey_batch_size",
    "Rows (texts or sequences) in one forward pass of the local runtime",
    ["model", "kind"],
    buckets=_BATCH_BUCKETS,
)
FORWARD_SECONDS = Histogram(
    "monkey_forward_seconds",
    "Duration of one forward pass (embed batch, prefill or decode step)",
    ["model", "kind"],
    buckets=_SECONDS_BUCKETS,
)
GENERATED_TOKENS = Counter(
    "monkey_generated_tokens_total",
    "Tokens sampled by the local runtime (rate() of it is tokens/s)",
    ["model"],
)
QUEUE_WAIT_SECONDS = Histogram(
    "monkey_batch_queue_wait_seconds",
    "Time from a job handing its input to the executor until its first forward pass",
    ["model", "kind"],
    buckets=_SECONDS_BUCKETS,
)
GPU_MEMORY_BYTES = Gauge(
    "monkey_gpu_memory_bytes",
    "CUDA memory held by torch in this worker process",
    ["device", "state"],
)

__all__ = [
    "BATCH_SIZE", "FORWARD_SECONDS", "GENERATED_TOKENS", "QUEUE_WAIT_SECONDS", "GPU_MEMORY_BYTES",
]
