"""`monkey up`: the whole stack on one machine, on embedded defaults.

SQLite under .monkey/, a private Redis server (unless REDIS_URL is set), migrations,
an API key on first run, then the API (serving the built web UI), a worker for each
queue and Flower, as child processes. Ctrl-C or SIGTERM (a platform's redeploy, when
the whole stack is one service) stops all of them: each child gets SIGTERM and its
drain window (MONKEY_DRAIN_S) before SIGKILL; none is left behind.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from common.settings import Settings
from monkey.embedded import EmbeddedRedis


def _wait_http(url: str, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _first_key(settings: Settings) -> str | None:
    """Create a key on the first run and keep it in .monkey/api-key (mode 600)."""
    from common.keys import create_api_key

    path = settings.data_dir / "api-key"
    if path.exists():
        return None
    key = asyncio.run(create_api_key(settings, "local"))
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


class _Stopped(Exception):
    """SIGTERM arrived: stop the children as Ctrl-C does."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def run_up(*, host: str | None, port: int | None, flower_port: int, gpu_worker: bool) -> int:
    env = dict(os.environ)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_server = None
    if "REDIS_URL" not in env:
        redis_server = EmbeddedRedis(settings.data_dir / "redis").start()
        env["REDIS_URL"] = redis_server.url
    env.setdefault("DATABASE_URL", settings.database_url)
    settings = Settings(redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"])
    port = port or settings.port

    from common.migrate import upgrade

    upgrade(settings)
    new_key = _first_key(settings)

    monkey = [sys.executable, "-m", "monkey.cli"]
    commands = {
        "api": [*monkey, "api", "--port", str(port), *(["--host", host] if host else [])],
        "llm-worker": [*monkey, "worker", "--queues", "llm"],
        "flower": [*monkey, "flower", "--port", str(flower_port)],
    }
    if gpu_worker and importlib.util.find_spec("torch") is not None:
        commands["gpu-worker"] = [*monkey, "worker", "--queues", "gpu", "--concurrency", "64"]
    elif gpu_worker:
        click.echo("torch is not installed: no gpu worker (pip install '.[ml]' to add one)",
                   err=True)

    procs: dict[str, subprocess.Popen] = {}
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, env=env)
        if not _wait_http(f"http://127.0.0.1:{port}/readyz", 60):
            click.echo("the API did not become ready; see the logs above", err=True)
            return 1
        _banner(port, flower_port, settings, new_key)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    click.echo(f"{name} exited with code {proc.returncode}; stopping", err=True)
                    return proc.returncode or 1
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stopped):
        click.echo("\nstopping...", err=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop
        _stop_all(procs, grace_s=settings.drain_s + 4)
        if redis_server:
            redis_server.stop()


def _banner(port: int, flower_port: int, settings: Settings, new_key: str | None) -> None:
    key_file = Path(settings.data_dir) / "api-key"
    lines = [
        "",
        f"  Monkey Coder is up: http://127.0.0.1:{port}",
        f"  Flower:             http://127.0.0.1:{flower_port}",
        f"  Database:           {settings.database_url}",
    ]
    if new_key:
        lines.append(f"  Your API key:       {new_key}   (also in {key_file})")
    else:
        lines.append(f"  API key:            in {key_file} (or: monkey keys create --name NAME)")
    lines += ["  Ctrl-C stops everything.", ""]
    click.echo("\n".join(lines), err=True)


def _stop_all(procs: dict[str, subprocess.Popen], *, grace_s: float) -> None:
    """SIGTERM to every child, then SIGKILL to those still alive after grace_s (the
    workers' drain window and a margin)."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
