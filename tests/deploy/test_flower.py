"""`monkey flower` refuses to listen beyond loopback without FLOWER_BASIC_AUTH, and hands
Flower the right command line (never logging the password)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common.settings import Settings
from monkey.flower import (
    FlowerConfigError,
    flower_app,
    flower_argv,
    is_loopback,
    parse_basic_auth,
    run_flower,
)
from tests.deploy.files import REPO

SECRET = "pw-that-must-not-leak"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(address):
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "10.0.0.5", "flower.internal"])
def test_addresses_beyond_loopback(address):
    assert not is_loopback(address)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", ""])
def test_refuses_to_listen_beyond_loopback_without_auth(address):
    with pytest.raises(FlowerConfigError, match="FLOWER_BASIC_AUTH"):
        run_flower(Settings(flower_basic_auth=""), port=0, address=address)


@pytest.mark.parametrize("value", ["admin", f"admin:{SECRET},:{SECRET}", f"admin:{SECRET},ops:"])
def test_malformed_basic_auth_is_refused_without_echoing_it(value):
    with pytest.raises(FlowerConfigError) as err:
        parse_basic_auth(value)
    assert SECRET not in str(err.value)


def test_argv_with_auth_prefix_and_dual_stack():
    settings = Settings(flower_basic_auth=f"admin:{SECRET}, ops:two")
    argv = flower_argv(settings, port=5555, address="::", url_prefix="/flower/")
    assert argv == [
        "flower",
        "--port=5555",
        "--address=",  # Tornado binds "" on IPv4 and IPv6; "::" would be IPv6 only.
        "--url_prefix=flower",
        f"--basic_auth=admin:{SECRET},ops:two",
    ]


def test_loopback_without_auth_is_allowed():
    argv = flower_argv(Settings(flower_basic_auth=""), port=5555, address="127.0.0.1")
    assert argv == ["flower", "--port=5555", "--address=127.0.0.1"]


def test_flower_sees_a_redis_broker_url():
    """Flower picks its broker client (Broker tab, /api/queues/length) from the scheme
    of the connection's URL: `redis`, not our transport's import path."""
    settings = Settings(redis_url="redis://:pw@127.0.0.1:6399/2")
    with flower_app(settings).connection_for_read() as conn:
        assert conn.as_uri(include_password=True) == "redis://:pw@127.0.0.1:6399/2"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    return subprocess.run(
        [sys.executable, "-m", "monkey.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**base, "REDIS_URL": "redis://127.0.0.1:1/0", **env},
    )


@pytest.mark.timeout(60)
def test_cli_refuses_0_0_0_0_without_auth():
    result = _run(["flower", "--address", "0.0.0.0", "--port", "0"])
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_cli_refuses_malformed_auth_without_leaking_it():
    result = _run(["flower", "--address", "::", "--port", "0"], FLOWER_BASIC_AUTH=SECRET)
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
    assert SECRET not in result.stdout + result.stderr
