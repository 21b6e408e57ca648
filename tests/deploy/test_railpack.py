"""Railway's build configs: valid railpack.json, and every Python service built from the
repository root as one installed project (common/ included, no PYTHONPATH)."""

from __future__ import annotations

import json
import re
import tomllib

import jsonschema
import pytest

from tests.deploy.files import RAILPACK_FILES, REPO, load_json

PYTHON_CONFIGS = ["railpack.json", "api/railpack.json", "workers/railpack.json"]
HEAVY = ("torch", "transformers", "sentence-transformers")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def package_dirs() -> set[str]:
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return {p.rstrip("*") for p in patterns}


def locked_files(config: dict) -> list[str]:
    """The requirements files that the config's build steps install, hashes checked."""
    text = json.dumps(config["steps"])
    found = re.findall(r"pip install --require-hashes --no-deps -r (requirements/\S+\.txt)", text)
    assert found, "the build installs the lock: pip install --require-hashes -r requirements/..."
    copied = [c["src"] for step in config["steps"].values() for c in step.get("commands", [])
              if isinstance(c, dict) and "src" in c]
    assert set(found) <= set(copied), "the deps step copies the files it installs"
    return found


def installed_extras(config: dict) -> set[str]:
    """The extras of the requirements files the build installs: the --extra flags of the
    `uv export` command that `make lock` records at the top of each."""
    extras = set()
    for path in locked_files(config):
        header = (REPO / path).read_text().split("\n", 2)[1]
        extras |= set(re.findall(r"--extra (\w+)", header))
    return extras


def installs_torch(config: dict) -> bool:
    """torch from requirements/torch.txt, by version (scripts/lock.py says why)."""
    steps = json.dumps(config["steps"])
    if "pip install -c requirements/torch.txt torch" not in steps:
        return False
    assert '"src": "requirements/torch.txt"' in steps, "the deps step copies torch.txt"
    return True


def string_commands(config: dict):
    for name, step in config.get("steps", {}).items():
        for command in step.get("commands", []):
            yield name, command if isinstance(command, str) else command.get("cmd", "")


@pytest.mark.parametrize("path", sorted(RAILPACK_FILES))
def test_railpack_json_validates(path, railpack_schema):
    validator = jsonschema.Draft202012Validator(railpack_schema)
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(load_json(REPO / path))
    ]
    assert errors == [], f"{path} does not validate against railpack.schema.json"


def test_schema_rejects_railway_service_settings(railpack_schema):
    # The seed put healthCheckTimeout in railpack.json; it belongs to Railway's service
    # settings (or railway.json), and the schema must keep refusing it.
    validator = jsonschema.Draft202012Validator(railpack_schema)
    for bad in ({"healthcheckTimeout": 600}, {"deploy": {"healthcheckTimeout": 600}}):
        assert list(validator.iter_errors(bad))


@pytest.mark.parametrize("path", sorted(RAILPACK_FILES))
def test_no_pythonpath_or_healthcheck_settings(path):
    text = (REPO / path).read_text()
    assert "PYTHONPATH" not in text
    assert "healthcheck" not in text.lower()


@pytest.mark.parametrize("path", PYTHON_CONFIGS)
def test_python_services_install_the_whole_project(path):
    config = load_json(REPO / path)
    assert config["provider"] == "python"
    project = config["steps"]["project"]
    local = [i for i in project["inputs"] if isinstance(i, dict) and i.get("local")]
    assert local, "the project step takes the sources from the repository root"
    assert package_dirs() <= set(local[0]["include"]), "every package reaches the build"
    assert {"pyproject.toml", "README.md"} <= set(local[0]["include"])
    assert {"include": [".venv"]} in project["deployOutputs"], "the venv reaches the image"
    assert "/app/.venv/bin" in config["deploy"]["paths"]
    assert installed_extras(config) <= set(pyproject()["project"]["optional-dependencies"])


def test_backend_build_has_no_torch():
    extras = pyproject()["project"]["optional-dependencies"]
    backend = installed_extras(load_json(REPO / "api/railpack.json"))
    assert {"api", "llm"} <= backend
    assert "ml" not in backend and "all" not in backend
    for extra in backend:
        assert not [d for d in extras[extra] if d.lower().startswith(HEAVY)], extra
    config = load_json(REPO / "api/railpack.json")
    for path in locked_files(config):
        lines = (REPO / path).read_text().splitlines()
        assert not [line for line in lines if line.lower().startswith(HEAVY)], path
    assert not installs_torch(config)


def test_ml_build_installs_torch_for_cpu():
    for path in ["workers/railpack.json", "railpack.json"]:
        config = load_json(REPO / path)
        assert "ml" in installed_extras(config)
        assert installs_torch(config), path
        # Railway has no GPUs: the CPU wheel is a tenth of the CUDA one.
        assert config["steps"]["deps"]["variables"]["PIP_EXTRA_INDEX_URL"].endswith("/whl/cpu")


@pytest.mark.parametrize("path", sorted(RAILPACK_FILES))
def test_string_commands_survive_railpacks_shell_quoting(path):
    # Railpack runs a string command as sh -c '<command>': a single quote inside breaks it.
    for step, command in string_commands(load_json(REPO / path)):
        assert "'" not in command, f"{path} step {step}: {command}"
