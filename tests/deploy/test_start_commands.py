"""Every `monkey ...` that a deployment file starts is a command the CLI really has, with
options it really takes; and HTTP services bind PORT on IPv4 and IPv6."""

from __future__ import annotations

import json
import re
import shlex

import click
import pytest
import yaml

from common.constants import QUEUES
from tests.deploy.files import COMPOSE_FILE, RAILPACK_FILES, REPO, load_json

OPERATORS = {"&&", "||", ";", "|", "&"}
SAMPLE_ENV = {"PORT": "8000"}


def expand(text: str) -> str:
    """Shell parameter expansion, enough for start commands: ${X:-d}, ${X}, $X."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: SAMPLE_ENV.get(m[1], m[2]), text)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: SAMPLE_ENV.get(m[1], "x"), text)


def shell_invocations(script: str) -> list[list[str]]:
    """Split a shell command line into simple commands, without `exec` or VAR=... prefixes."""
    lexer = shlex.shlex(expand(script), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in [*lexer, ";"]:
        if token in OPERATORS:
            while current and (current[0] == "exec" or re.fullmatch(r"\w+=.*", current[0])):
                current.pop(0)
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    return commands


def argv_invocations(argv: list[str]) -> list[list[str]]:
    if len(argv) >= 3 and argv[0] in ("sh", "bash", "/bin/sh", "/bin/bash") and argv[1] == "-c":
        return shell_invocations(argv[2])
    return [[expand(a) for a in argv]]


def dockerfile_cmd(path) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
    assert len(lines) == 1, f"{path.name} has one exec-form CMD"
    return json.loads(lines[0][4:])


def start_commands() -> dict[str, list[list[str]]]:
    found = {}
    for path in RAILPACK_FILES:
        found[path] = shell_invocations(load_json(REPO / path)["deploy"]["startCommand"])
    for name, service in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items():
        if "command" in service:
            found[f"docker-compose.yml:{name}"] = argv_invocations(service["command"])
    for path in sorted((REPO / "docker").glob("*.Dockerfile")):
        found[f"docker/{path.name}"] = argv_invocations(dockerfile_cmd(path))
    return found


def check_monkey(argv: list[str]) -> click.Context:
    """Parse argv with the real `monkey` group (no command runs) and return its context."""
    from monkey.cli import main

    parent = click.Context(main, info_name="monkey")
    command, name, args = main, "monkey", argv[1:]
    while isinstance(command, click.Group):
        assert args, f"{argv}: a subcommand of `{name}` is missing"
        sub = command.get_command(parent, args[0])
        assert sub is not None, f"{argv}: `{args[0]}` is not a command of `{name}`"
        command, name, args = sub, args[0], args[1:]
        if isinstance(command, click.Group):
            parent = click.Context(command, info_name=name, parent=parent)
    try:
        return command.make_context(name, args, parent=parent)
    except click.UsageError as exc:
        pytest.fail(f"{' '.join(argv)}: {exc.format_message()}")


STARTS = start_commands()


def test_the_scan_finds_what_it_should():
    monkeys = [" ".join(c) for cs in STARTS.values() for c in cs if c[0] == "monkey"]
    for expected in (
        "monkey api",
        "monkey worker --queues gpu",
        "monkey worker --queues llm",
        "monkey ml-service --host ::",
        "monkey migrate",
        "monkey flower",
        "monkey up",
    ):
        assert any(m.startswith(expected) for m in monkeys), expected


@pytest.mark.parametrize("where", sorted(STARTS))
def test_start_commands_name_real_commands(where):
    for argv in STARTS[where]:
        if argv[0] != "monkey":
            continue
        ctx = check_monkey(argv)
        if "queues" in ctx.params:
            assert set(ctx.params["queues"].split(",")) <= set(QUEUES), argv


@pytest.mark.parametrize("path", ["api/railpack.json", "web/railpack.json",
                                  "workers/railpack.json"])
def test_railway_http_services_bind_port_on_ipv4_and_ipv6(path):
    start = load_json(REPO / path)["deploy"]["startCommand"]
    assert "${PORT" in start
    assert "--host ::" in start or "tcp://[::]:" in start


def test_single_service_binds_port_on_ipv4_and_ipv6():
    config = load_json(REPO / "railpack.json")
    # `monkey up` starts its API on MONKEY_HOST.
    assert config["deploy"]["variables"].get("MONKEY_HOST") == "::"
    assert "--port ${PORT" in config["deploy"]["startCommand"]


@pytest.mark.parametrize(
    "argv",
    [
        ["monkey", "serve"],
        ["monkey", "worker", "--queue", "gpu"],
        ["monkey", "worker"],
        ["monkey", "api", "--port", "http"],
        ["monkey", "keys"],
    ],
)
def test_the_check_catches_wrong_commands(argv):
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check_monkey(argv)
