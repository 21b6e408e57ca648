"""Hosted LLM providers (OpenAI, Anthropic, Groq, Google, xAI) on the `llm` queue.

`make_provider_runtime(provider, settings)` builds the runtime for `PROVIDER/NAME`
models; the worker keeps one per provider and process and shares it between its
threads. Each provider's module (and its SDK) is imported only when first needed.
"""

from __future__ import annotations

import importlib

from common.errors import JobInvalid
from common.settings import Settings
from workers.runtimes.providers._base import ProviderRuntime
from workers.runtimes.providers._retry import RetryPolicy

_RUNTIMES = {
    "openai": ("openai_chat", "OpenAIRuntime"),
    "xai": ("openai_chat", "XAIRuntime"),
    "anthropic": ("anthropic_messages", "AnthropicRuntime"),
    "groq": ("groq_chat", "GroqRuntime"),
    "google": ("google_gemini", "GoogleRuntime"),
}
PROVIDER_NAMES = tuple(_RUNTIMES)


def make_provider_runtime(provider: str, settings: Settings, *,
                          policy: RetryPolicy | None = None) -> ProviderRuntime:
    """The runtime for `provider`; `policy` overrides the backoff (tests use short ones)."""
    try:
        module_name, class_name = _RUNTIMES[provider]
    except KeyError:
        raise JobInvalid(f"unknown provider {provider!r}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(settings, policy=policy)


__all__ = ["PROVIDER_NAMES", "ProviderRuntime", "RetryPolicy", "make_provider_runtime"]
