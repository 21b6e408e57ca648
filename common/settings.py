"""One settings object, read from the environment (the seed's variable names)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.constants import EMBEDDING_DEFAULT, PROVIDERS

PROVIDER_KEY_VARS = {p: f"{p.upper()}_API_KEY" for p in PROVIDERS}
PROVIDER_URL_VARS = {p: f"{p.upper()}_BASE_URL" for p in PROVIDERS}


def _env(name: str, default: Any = None, **kw: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **kw)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: str = _env("PYTHON_ENV", "development")
    data_dir: Path = _env("MONKEY_DATA_DIR", Path(".monkey"))
    database_url: str = _env("DATABASE_URL", "")
    redis_url: str = _env("REDIS_URL", "redis://127.0.0.1:6379/0")

    host: str = _env("MONKEY_HOST", "127.0.0.1")
    port: int = _env("PORT", 8000)
    cors_origins: str = _env("MONKEY_CORS_ORIGINS", "")
    web_dir: Path | None = _env("MONKEY_WEB_DIR", None)

    # Limits on what one request may carry.
    max_body_bytes: int = _env("MONKEY_MAX_BODY_BYTES", 1_000_000)
    max_prompt_chars: int = _env("MONKEY_MAX_PROMPT_CHARS", 200_000)
    max_texts: int = _env("MONKEY_MAX_TEXTS", 2048)
    max_file_bytes: int = _env("MONKEY_MAX_FILE_BYTES", 200 * 1024 * 1024)

    # Per-key limits (0 turns one off): requests per second with a burst, jobs waiting
    # in the queue, and open event streams (per API process).
    rate_limit_per_s: float = _env("MONKEY_RATE_LIMIT_PER_S", 100.0)
    rate_limit_burst: int = _env("MONKEY_RATE_LIMIT_BURST", 500)
    max_queued_per_key: int = _env("MONKEY_MAX_QUEUED_PER_KEY", 10_000)
    max_streams_per_key: int = _env("MONKEY_MAX_STREAMS_PER_KEY", 100)
    # An event stream whose client reads nothing for this long is closed (its slot and
    # memory go back; an EventSource reconnects with Last-Event-ID).
    sse_send_timeout_s: float = _env("MONKEY_SSE_SEND_TIMEOUT_S", 30.0)
    # Fair share between keys: at most this many batch lines wait on the broker, the
    # room shared between the busy keys by weight, and a key's batches keep at most
    # this many (times its weight) queued, so another key's batch lines start promptly
    # (0: no window).
    batch_window: int = _env("MONKEY_BATCH_WINDOW", 500, ge=0)
    # The same for interactive jobs: beyond this many of a key's interactive jobs
    # waiting on the broker, its further ones wait in the database (held back) and go
    # out as its earlier ones start, so one key's flood does not queue ahead of every
    # other key's jobs (0: no window). Both windows scale with the key's weight
    # (`monkey keys create --weight`, `monkey keys weight`).
    interactive_window: int = _env("MONKEY_INTERACTIVE_WINDOW", 100, ge=0)
    # At most this many jobs of one key run at once, whatever their priority; the rest
    # wait queued (0: no cap). Every worker must run with the same value.
    max_running_per_key: int = _env("MONKEY_MAX_RUNNING_PER_KEY", 0, ge=0)

    # Reliability: leases, heartbeats, reconciler, broker.
    lease_s: float = _env("MONKEY_LEASE_S", 10.0)
    heartbeat_s: float = _env("MONKEY_HEARTBEAT_S", 2.0)
    reconcile_s: float = _env("MONKEY_RECONCILE_S", 1.0)
    # The ML service's supervisor (`monkey ml-service`), woken by the control process
    # when gpu jobs wait and no gpu worker is alive; at most once per wake interval.
    ml_service_url: str = _env("ML_SERVICE_URL", "")
    wake_interval_s: float = _env("MONKEY_WAKE_INTERVAL_S", 15.0)
    # The API's queue gauges (/metrics) are computed at most this often per process.
    queue_metrics_ttl_s: float = _env("MONKEY_QUEUE_METRICS_TTL_S", 5.0)
    # The control process samples the queues this often for the operators' charts
    # (GET /v1/ops/history keeps the last hour); 0: no samples.
    ops_sample_s: float = _env("MONKEY_OPS_SAMPLE_S", 10.0, ge=0)
    # Who runs the control process (reconciler, batches): `monkey api` as its child,
    # or a `monkey control` deployed on its own.
    control: Literal["child", "external"] = _env("MONKEY_CONTROL", "child")
    visibility_timeout_s: int = _env("MONKEY_VISIBILITY_TIMEOUT_S", 3600)
    events_maxlen: int = _env("MONKEY_EVENTS_MAXLEN", 20_000)
    events_ttl_s: int = _env("MONKEY_EVENTS_TTL_S", 24 * 3600)
    # Batch lines are read from the batch's output file, not followed live: their
    # streams (a done event holds the whole result) leave Redis sooner.
    batch_events_ttl_s: int = _env("MONKEY_BATCH_EVENTS_TTL_S", 3600)
    # Batch lines of models whose line costs little (debug/echo, local embeddings) go
    # out this many to a task message: one claim, one forward pass or a few, bulk
    # finishes. A cancelled batch stops within one chunk.
    batch_chunk_lines: int = _env("MONKEY_BATCH_CHUNK_LINES", 64)
    write_retry_s: float = _env("MONKEY_WRITE_RETRY_S", 120.0)
    # A job whose worker died this many times fails (`worker_lost`) instead of looping.
    max_attempts: int = _env("MONKEY_MAX_ATTEMPTS", 10)
    # SIGTERM to exit: a worker lets its jobs finish for most of it and hands back the
    # rest; the API ends its event streams at once. Under the platform's grace (compose
    # stop_grace_period, Railway's RAILWAY_DEPLOYMENT_DRAINING_SECONDS): docs/deploy.md.
    drain_s: float = _env("MONKEY_DRAIN_S", 8.0)
    # A queued job whose task message is on no broker list, unacked by no worker and
    # held by no live one this long after it was published is published again
    # (api/recovery.py); every MONKEY_LOST_SCAN_S the reconciler checks every queued
    # job's message, even when the counts of jobs and messages agree.
    lost_after_s: float = _env("MONKEY_LOST_AFTER_S", 15.0)
    lost_scan_s: float = _env("MONKEY_LOST_SCAN_S", 300.0)

    # Webhooks: how long a delivery is retried, the first retry's delay (it doubles, up
    # to an hour), and whether URLs may point at private, loopback or link-local
    # addresses (tests and self-hosted setups; refused by default against SSRF).
    webhook_retry_s: float = _env("MONKEY_WEBHOOK_RETRY_S", 3 * 24 * 3600.0)
    webhook_backoff_s: float = _env("MONKEY_WEBHOOK_BACKOFF_S", 5.0)
    webhook_allow_private: bool = _env("MONKEY_WEBHOOK_ALLOW_PRIVATE", False)

    # Retention (api/retention.py): ended jobs, responses, batches with their lines and
    # files are deleted this many days after they ended (files: after upload) unless
    # they set their own `expires_after`; 0 keeps them forever. A swept id answers 404
    # saying it expired for MONKEY_RETENTION_TOMBSTONE_DAYS more. The control process
    # sweeps every MONKEY_SWEEP_S, at most MONKEY_SWEEP_SLICE rows per statement.
    retention_days: float = _env("MONKEY_RETENTION_DAYS", 30.0, ge=0)
    tombstone_days: float = _env("MONKEY_RETENTION_TOMBSTONE_DAYS", 180.0, ge=0)
    sweep_s: float = _env("MONKEY_SWEEP_S", 60.0, gt=0)
    sweep_slice: int = _env("MONKEY_SWEEP_SLICE", 500, ge=1, le=10_000)

    # Workers.
    worker_concurrency: int = _env("MONKEY_WORKER_CONCURRENCY", 32)
    metrics_port: int | None = _env("MONKEY_METRICS_PORT", None)
    local_models: str = _env("MONKEY_LOCAL_MODELS", "")
    max_batch: int = _env("MONKEY_MAX_BATCH", 32)
    max_wait_ms: float = _env("MONKEY_MAX_WAIT_MS", 5.0)
    # Embeddings: padded tokens (rows x longest text) per forward pass; 0: rows alone.
    max_batch_tokens: int = _env("MONKEY_MAX_BATCH_TOKENS", 0)
    device: str = _env("MONKEY_DEVICE", "auto")
    # debug/embed's simulated forward pass (workers/runtimes/debug_embed.py): a fixed
    # cost per pass plus a cost per text; 0 and 50 stand in for 20,000 texts/s.
    debug_embed_batch_ms: float = _env("MONKEY_DEBUG_EMBED_BATCH_MS", 0.0, ge=0)
    debug_embed_text_us: float = _env("MONKEY_DEBUG_EMBED_TEXT_US", 0.0, ge=0)
    provider_max_retries: int = _env("MONKEY_PROVIDER_MAX_RETRIES", 4)
    provider_timeout_s: float = _env("MONKEY_PROVIDER_TIMEOUT_S", 600.0)

    # Hosted providers: keys and base-URL overrides.
    openai_api_key: str = _env("OPENAI_API_KEY", "")
    anthropic_api_key: str = _env("ANTHROPIC_API_KEY", "")
    groq_api_key: str = _env("GROQ_API_KEY", "")
    google_api_key: str = _env("GOOGLE_API_KEY", "")
    xai_api_key: str = _env("XAI_API_KEY", "")
    openai_base_url: str = _env("OPENAI_BASE_URL", "")
    anthropic_base_url: str = _env("ANTHROPIC_BASE_URL", "")
    groq_base_url: str = _env("GROQ_BASE_URL", "")
    google_base_url: str = _env("GOOGLE_BASE_URL", "")
    xai_base_url: str = _env("XAI_BASE_URL", "")

    flower_basic_auth: str = _env("FLOWER_BASIC_AUTH", "")

    @field_validator("database_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'monkey.db').resolve()}"
        if self.max_batch < 1:
            raise ValueError("MONKEY_MAX_BATCH must be at least 1")
        if self.batch_chunk_lines < 1:
            raise ValueError("MONKEY_BATCH_CHUNK_LINES must be at least 1")
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("MONKEY_HEARTBEAT_S must be shorter than MONKEY_LEASE_S")
        if self.lost_after_s <= 0 or self.lost_scan_s <= 0:
            raise ValueError("MONKEY_LOST_AFTER_S and MONKEY_LOST_SCAN_S must be positive")
        return self

    # Derived views --------------------------------------------------------

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def async_database_url(self) -> str:
        return _with_driver(self.database_url, sqlite="sqlite+aiosqlite", pg="postgresql+asyncpg")

    @property
    def sync_database_url(self) -> str:
        return _with_driver(self.database_url, sqlite="sqlite", pg="postgresql+psycopg")

    def provider_key(self, provider: str) -> str:
        return getattr(self, f"{provider}_api_key", "") or ""

    def provider_base_url(self, provider: str) -> str | None:
        return getattr(self, f"{provider}_base_url", "") or None

    def local_model_sources(self) -> dict[str, str]:
        """`local/NAME` -> path or hub id, from MONKEY_LOCAL_MODELS plus the default embedder."""
        models = {EMBEDDING_DEFAULT: f"sentence-transformers/{EMBEDDING_DEFAULT}"}
        for part in self.local_models.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, source = part.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ValueError(f"MONKEY_LOCAL_MODELS entry {part!r} is not NAME=PATH-OR-HUB-ID")
            models[name.strip()] = source.strip()
        return models

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def _with_driver(url: str, *, sqlite: str, pg: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"DATABASE_URL {url!r} has no scheme")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"{sqlite}://{rest}"
    if base in ("postgres", "postgresql"):
        return f"{pg}://{rest}"
    raise ValueError(f"DATABASE_URL scheme {scheme!r} is not supported (use postgresql or sqlite)")


@lru_cache
def get_settings() -> Settings:
    return Settings()
