"""LocalRuntime: every `local/...` model of one worker process, each behind its own executor.

Importing this module is cheap: torch, transformers and sentence-transformers are imported in
`load()`, which the worker calls once before it takes tasks (docs/architecture.md, "Layout").
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from common.errors import JobInvalid, JobTimeout, ModelUnavailable
from common.settings import Settings
from workers.runtimes.base import EmbedResult, GenerateResult, JobSpec, Runtime

if TYPE_CHECKING:  # imported in load(): they import torch
    from workers.runtimes.local.embed import EmbedExecutor
    from workers.runtimes.local.generate import GenerateExecutor

log = logging.getLogger(__name__)


class LocalRuntime(Runtime):
    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._loaded = False
        self.device: str | None = None
        self.executors: dict[str, EmbedExecutor | GenerateExecutor] = {}  # by NAME
        self._failed: dict[str, str] = {}

    def load(self) -> None:
        """Load every configured model and start its executor thread (once per process).

        A model that fails to load is logged and its jobs fail with model_unavailable; the
        others still serve, and `loaded_models()` lists only what is in memory."""
        with self._lock:
            if self._loaded:
                return
            if "torch" not in sys.modules:
                # A worker never has its cores to itself (Celery's threads, the event writer,
                # often the API too): OpenMP's spinning idle threads then steal them from the
                # forward pass. Measured on 2 cores: 256 embed jobs through the API in 13.3 s
                # with spinning, 5.8 s without. Read once, when torch loads its OpenMP.
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            from workers.runtimes.local import loading

            self.device = loading.pick_device(self._settings.device)
            for name, source in self._settings.local_model_sources().items():
                try:
                    executor = self._start(loading, name, source)
                except ModelUnavailable as exc:
                    log.error("local/%s is unavailable: %s", name, exc.message)
                    self._failed[name] = exc.message
                    continue
                self.executors[name] = executor
                log.info("local/%s loaded on %s (%s)", name, self.device, executor.kind)
            self._loaded = True

    def _start(self, loading, name: str, source: str) -> EmbedExecutor | GenerateExecutor:
        source = loading.resolve_source(name, source)
        limits: dict[str, Any] = {"max_batch": self._settings.max_batch,
                                  "max_wait_ms": self._settings.max_wait_ms}
        if loading.model_kind(name, source) == "embed":
            from workers.runtimes.local.embed import EmbedExecutor

            executor: EmbedExecutor | GenerateExecutor = EmbedExecutor(
                loading.load_embedder(name, source, self.device), **limits,
                max_batch_tokens=self._settings.max_batch_tokens)
        else:
            from workers.runtimes.local.generate import GenerateExecutor

            executor = GenerateExecutor(loading.load_lm(name, source, self.device), **limits)
        executor.start()
        return executor

    def close(self) -> None:
        """Stop the executor threads (jobs still inside them fail with model_unavailable)."""
        for executor in self.executors.values():
            executor.close()

    def loaded_models(self) -> list[str]:
        return [f"local/{name}" for name in self.executors]

    def executor(self, job: JobSpec, kind: str):
        self.load()  # a no-op after the worker's start-up call
        name = job.model_name
        if name in self._failed:
            raise ModelUnavailable(self._failed[name])
        executor = self.executors.get(name)
        if executor is None:
            raise ModelUnavailable(f"{job.model} is not configured on this worker")
        if executor.kind != kind:
            what = "an embedding model" if executor.kind == "embed" else "a text generation model"
            raise JobInvalid(f"{job.model} is {what}; it cannot {kind}")
        return executor

    def generate(self, job: JobSpec, ctx) -> GenerateResult:
        return self.executor(job, "generate").generate(job, ctx)

    def embed(self, job: JobSpec, ctx) -> EmbedResult:
        texts = _texts(job)
        return _checked(job, ctx, texts, self.executor(job, "embed").embed(texts, ctx))

    def embed_many(self, jobs: list[tuple[JobSpec, Any]]) -> list[EmbedResult | Exception]:
        """Every job's texts go to the executor before the first result is awaited, so
        a chunk of one-text lines fills whole forward passes."""
        out: list[EmbedResult | Exception | None] = [None] * len(jobs)
        submitted = []
        for i, (job, ctx) in enumerate(jobs):
            try:
                texts = _texts(job)
                submitted.append((i, texts, self.executor(job, "embed").submit_texts(texts, ctx)))
            except Exception as exc:  # that job ends with it; the others go on
                out[i] = exc
        for i, texts, pending in submitted:
            job, ctx = jobs[i]
            try:
                out[i] = _checked(job, ctx, texts, pending())
            except Exception as exc:
                out[i] = exc
        return [r for r in out if r is not None]


def _texts(job: JobSpec) -> list[str]:
    texts = job.input.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise JobInvalid("embed input needs texts: a non-empty list of strings")
    return texts


def _checked(job: JobSpec, ctx, texts: list[str], result: EmbedResult) -> EmbedResult:
    if ctx.stop_reason() == "timeout" and len(result.embeddings) < len(texts):
        raise JobTimeout(f"job {job.id} ran past its timeout")
    return result


def make_local_runtime(settings: Settings) -> Runtime:
    """The factory `workers.runtimes.make_runtime` calls for `local/...` models. The worker
    keeps one instance per process (`Worker.runtime_for`), serving all of them."""
    return LocalRuntime(settings)
