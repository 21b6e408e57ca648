"""The services that Railway and docker-compose start on `::` answer on IPv4 and IPv6,
and the `monkey` command imports nothing that only one image has."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from monkey.embedded import free_port
from tests.conftest import wait_until
from tests.deploy.files import REPO

# The backend image has no torch; the ML image has neither the API's nor Flower's packages.
IMAGE_SPECIFIC = (
    "torch",
    "transformers",
    "sentence_transformers",
    "fastapi",
    "uvicorn",
    "flower",
    "tornado",
)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module", autouse=True)
def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"this machine has no IPv6 loopback: {exc}")


def assert_dual_stack(proc, port: int, path: str) -> None:
    v4, v6 = f"http://127.0.0.1:{port}{path}", f"http://[::1]:{port}{path}"
    wait_until(lambda: answers(v4) or answers(v6), 30, f"{path} answers", proc, interval=0.2)
    assert answers(v4), f"listening on :: must include IPv4 ({v4})"
    assert answers(v6), f"listening on :: must include IPv6 ({v6})"


@pytest.mark.timeout(90)
def test_api_on_double_colon_answers_ipv4_and_ipv6(make_stack):
    stack = make_stack("sqlite", api=False)
    port = free_port()
    proc = stack.spawn("api-dual-stack", ["api", "--host", "::", "--port", str(port)])
    assert_dual_stack(proc, port, "/healthz")


@pytest.mark.timeout(90)
def test_flower_on_double_colon_answers_ipv4_and_ipv6(make_stack):
    stack = make_stack("sqlite", api=False)
    port = free_port()
    proc = stack.spawn(
        "flower-dual-stack",
        ["flower", "--address", "::", "--port", str(port)],
        {"FLOWER_BASIC_AUTH": "admin:dual-stack"},
    )
    assert_dual_stack(proc, port, "/healthcheck")


@pytest.mark.timeout(90)
def test_ml_service_on_double_colon_answers_ipv4_and_ipv6(make_stack):
    stack = make_stack("sqlite", api=False)
    port = free_port()
    proc = stack.spawn("ml-service-dual-stack", ["ml-service", "--host", "::", "--port",
                                                 str(port)])
    assert_dual_stack(proc, port, "/healthz")


def test_monkey_cli_imports_nothing_image_specific():
    code = (
        "import json, sys, monkey.cli, monkey.flower, monkey.ml_service;"
        f"print(json.dumps(sorted(m for m in {IMAGE_SPECIFIC!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    ).stdout
    assert json.loads(out) == [], "import these inside the command that needs them"
