"""Which models exist, which kinds they serve, which queue runs them, and whether
they are configured. Read by the API (validation, GET /v1/models) without torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.constants import DEBUG_ECHO, DEBUG_EMBED, LOCAL_PREFIX, PROVIDERS, QUEUE_GPU, QUEUE_LLM
from common.errors import InvalidRequest, ModelNotFound
from common.settings import PROVIDER_KEY_VARS, Settings

# Providers whose runtime also embeds (their SDK has an embeddings endpoint).
_PROVIDER_KINDS = {"openai": ("generate", "embed")}
_PROVIDER_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "groq": "Groq",
                   "google": "Google Gemini", "xai": "xAI"}

# The generation parameters each runtime reads (DESIGN.md section 2); embed takes none.
GENERATE_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed")
_ECHO_PARAMS = ("max_tokens", "stop", "delay_ms")


@dataclass(frozen=True)
class ModelInfo:
    id: str
    kinds: tuple[str, ...]
    queue: str
    configured: bool
    source: str | None = None
    hint: str | None = None
    description: str = ""
    params: tuple[str, ...] = GENERATE_PARAMS

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "model",
            # OpenAI's Model requires it; a catalog entry has no creation time: 0.
            "created": 0,
            "owned_by": self.id.split("/", 1)[0],
            "kinds": list(self.kinds),
            "queue": self.queue,
            "configured": self.configured,
            "description": self.description,
            "params": list(self.params if "generate" in self.kinds else ()),
            **({"hint": self.hint} if self.hint else {}),
        }


def _local_kind(source: str) -> tuple[str, ...]:
    # A sentence-transformers model folder has modules.json (or its own config);
    # hub ids of that family start with its organisation name. The worker decides
    # the same way from the files it loads (workers/runtimes/local/loading.py).
    path = Path(source)
    markers = ("modules.json", "config_sentence_transformers.json")
    if source.startswith("sentence-transformers/") or any((path / m).exists() for m in markers):
        return ("embed",)
    return ("generate",)


def local_models(settings: Settings) -> list[ModelInfo]:
    return [
        ModelInfo(f"{LOCAL_PREFIX}/{name}", kinds, QUEUE_GPU, True, source=src,
                  description=f"{'Embedding' if kinds == ('embed',) else 'Text generation'} model "
                              f"{src}, run with torch on the gpu workers")
        for name, src in settings.local_model_sources().items()
        for kinds in [_local_kind(src)]
    ]


def _echo() -> ModelInfo:
    return ModelInfo(DEBUG_ECHO, ("generate",), QUEUE_LLM, True, params=_ECHO_PARAMS,
                     description="Diagnostic: streams the prompt back word by word, waiting "
                                 "delay_ms before each word; no model runs")


def _debug_embed() -> ModelInfo:
    return ModelInfo(DEBUG_EMBED, ("embed",), QUEUE_LLM, True, params=(),
                     description="Diagnostic: a unit vector of 384 floats derived from each "
                                 "text, no weights; each forward pass takes the time the llm "
                                 "workers' MONKEY_DEBUG_EMBED_BATCH_MS and _TEXT_US set")


def provider_entry(settings: Settings, provider: str, name: str = "*") -> ModelInfo:
    var = PROVIDER_KEY_VARS[provider]
    configured = bool(settings.provider_key(provider))
    return ModelInfo(
        f"{provider}/{name}",
        _PROVIDER_KINDS.get(provider, ("generate",)),
        QUEUE_LLM,
        configured,
        hint=None if configured else f"set {var} to use {provider} models",
        description=f"{_PROVIDER_NAMES[provider]}'s hosted models through its official SDK, "
                    "on the llm workers",
    )


def list_models(settings: Settings) -> list[ModelInfo]:
    providers = [provider_entry(settings, p) for p in PROVIDERS]
    return [_echo(), _debug_embed(), *local_models(settings), *providers]


def resolve(settings: Settings, model: str, kind: str) -> ModelInfo:
    """The model a job asks for, or InvalidRequest saying what to do instead."""
    info = find_model(settings, model)
    if kind not in info.kinds:
        raise InvalidRequest(f"model {model} does not serve {kind!r} jobs (it serves {info.kinds})",
                             param="model")
    return info


def find_model(settings: Settings, model: str) -> ModelInfo:
    """The catalog's entry for a model (a provider's model under its own name), or
    ModelNotFound saying what to do instead."""
    prefix, sep, name = model.partition("/")
    if not sep or not name:
        raise ModelNotFound(f"model {model!r} must be PROVIDER/NAME, e.g. debug/echo")
    if model == DEBUG_ECHO:
        info = _echo()
    elif model == DEBUG_EMBED:
        info = _debug_embed()
    elif prefix == LOCAL_PREFIX:
        found = {m.id: m for m in local_models(settings)}.get(model)
        if found is None:
            names = ", ".join(sorted(m.id for m in local_models(settings)))
            raise ModelNotFound(
                f"unknown local model {model!r}; configured: {names}. "
                "Add it to MONKEY_LOCAL_MODELS as NAME=PATH-OR-HUB-ID."
            )
        info = found
    elif prefix in PROVIDERS:
        info = provider_entry(settings, prefix, name)
        if not info.configured:
            raise ModelNotFound(
                f"provider {prefix} is not configured: set {PROVIDER_KEY_VARS[prefix]} "
                "on the API and the llm workers"
            )
    elif prefix == "debug":
        raise ModelNotFound(f"unknown debug model {model!r}; there are {DEBUG_ECHO} "
                            f"and {DEBUG_EMBED}")
    else:
        known = ", ".join(["debug", LOCAL_PREFIX, *PROVIDERS])
        raise ModelNotFound(f"unknown model provider {prefix!r} in {model!r}; known: {known}")
    return info
