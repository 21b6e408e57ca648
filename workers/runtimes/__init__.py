"""Runtimes by model family: `debug` (echo, embed), `local` (torch), and the hosted providers.

Each family's module is imported only when a job for it arrives, so an `llm`
worker never imports torch and a `gpu` worker never imports provider SDKs.
"""

from __future__ import annotations

from common.constants import LOCAL_PREFIX, PROVIDERS
from common.errors import JobInvalid
from common.settings import Settings
from workers.runtimes.base import Runtime


def runtime_key(model: str) -> str:
    """Which runtime instance serves `model`: one per family and process."""
    prefix = model.split("/", 1)[0]
    if prefix in ("debug", LOCAL_PREFIX, *PROVIDERS):
        return prefix
    raise JobInvalid(f"no runtime serves model {model!r}")


def make_runtime(key: str, settings: Settings) -> Runtime:
    if key == "debug":
        from workers.runtimes.debug_embed import DebugRuntime

        return DebugRuntime(settings.debug_embed_batch_ms, settings.debug_embed_text_us)
    if key == LOCAL_PREFIX:
        from workers.runtimes.local import make_local_runtime

        return make_local_runtime(settings)
    from workers.runtimes.providers import make_provider_runtime

    return make_provider_runtime(key, settings)


__all__ = ["Runtime", "make_runtime", "runtime_key"]
