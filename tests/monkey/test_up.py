"""`monkey up` as a platform and as a person at a terminal run it.

A platform stops it with SIGTERM: the whole stack ends, children included, within the
workers' drain window (a redeploy of the one-service setup must not leave an API or
worker running behind the new one), and its log is JSON lines. On a terminal every
line carries its service's prefix, and "Monkey Coder is up" is printed once, only
after every service (the workers included) is ready."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import httpx
import psutil
import pytest

from monkey.embedded import free_port
from tests.conftest import FAST_ENV, REPO, wait_until

pytestmark = pytest.mark.e2e  # a whole stack in subprocesses

BANNER = "Monkey Coder is up"


def _up_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "MONKEY_LOG_FORMAT", "MONKEY_LOG_COLOR")}
    env.update(FAST_ENV, MONKEY_DATA_DIR=str(tmp_path), MONKEY_DRAIN_S="2", **extra)
    return env


def _up_cmd(port: int, flower_port: int) -> list[str]:
    return [sys.executable, "-m", "monkey.cli", "up", "--port", str(port),
            "--flower-port", str(flower_port), "--no-gpu-worker"]


def _api_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _sigterm(proc: subprocess.Popen, children: list[psutil.Process]) -> float:
    """SIGTERM to `monkey up`: it exits 0, none of its children is left. The seconds."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    elapsed = time.monotonic() - started
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    return elapsed


def _reap(proc: subprocess.Popen, children: list[psutil.Process]) -> None:
    for child in children:
        if child.is_running():
            child.kill()
    if proc.poll() is None:
        proc.kill()


def test_sigterm_stops_every_child_and_exits_0_with_json_lines(tmp_path):
    port, flower_port = free_port(), free_port()
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(_up_cmd(port, flower_port), cwd=REPO, env=_up_env(tmp_path),
                            stdout=log, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: _api_ready(port), 90, "monkey up ready", proc=None)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # api (+ its control child), llm worker, flower
        wait_until(lambda: BANNER in (tmp_path / "up.log").read_text(), 30, "the banner")
        elapsed = _sigterm(proc, children)
        assert elapsed < 2 + 4 + 3, f"stopping took {elapsed:.1f}s"
    finally:
        _reap(proc, children)
        log.close()

    # Not a terminal: every line is a JSON object naming its service; Celery's banner
    # is one line; "up" is one record, with the URLs and not the key.
    lines = [ln for ln in (tmp_path / "up.log").read_text().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]
    assert all(isinstance(r, dict) and r.get("service") for r in records)
    assert {"api", "llm-worker", "flower", "monkey"} <= {r["service"] for r in records}
    ups = [r for r in records if r["msg"] == BANNER]
    assert len(ups) == 1 and ups[0]["url"] == f"http://127.0.0.1:{port}"
    key = (tmp_path / "api-key").read_text().strip()
    assert key not in "\n".join(lines)
    assert any(r["msg"].startswith("celery ") and r["service"] == "llm-worker"
               for r in records)
    assert not any("[tasks]" in r["msg"] or "--------------" in r["msg"] for r in records)


class _Pty:
    """A pseudo-terminal of `rows` lines whose output a thread keeps reading."""

    def __init__(self, rows: int) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 160, 0, 0))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # every writer closed its end
                return
            if not data:
                return
            self._chunks.append(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        self._reader.join(5)
        os.close(self.master)


def _controlling_terminal() -> None:
    """In the child, after setsid: its stdin (the pty) becomes its terminal, so ^C on
    the pty is a SIGINT to its foreground process group, as in a shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_on_a_terminal_prefixed_lines_the_banner_once_all_are_ready_and_ctrl_c(tmp_path):
    port, flower_port = free_port(), free_port()
    term = _Pty(rows=8)
    proc = subprocess.Popen(
        _up_cmd(port, flower_port), cwd=REPO,
        env=_up_env(tmp_path, NO_COLOR="1", TERM="xterm", MONKEY_UP_REMINDER_IDLE_S="1"),
        stdin=term.slave, stdout=term.slave, stderr=term.slave,
        start_new_session=True, preexec_fn=_controlling_terminal)
    term.start()
    worker: psutil.Process | None = None
    children: list[psutil.Process] = []
    try:
        # Hold the llm worker before it is ready (it takes a second to import Celery).
        def llm_worker() -> bool:
            nonlocal worker
            for child in psutil.Process(proc.pid).children():
                try:
                    if "worker" in child.cmdline() and "llm" in child.cmdline():
                        child.suspend()
                        worker = child
                        return True
                except psutil.NoSuchProcess:
                    pass
            return False

        wait_until(llm_worker, 60, "the llm worker started", interval=0.01)
        wait_until(lambda: _api_ready(port), 60, "the API ready")
        wait_until(lambda: "waiting for: llm-worker" in term.text(), 20, "the waiting note")
        time.sleep(1.0)
        assert BANNER not in term.text(), "the banner came before the llm worker was ready"

        assert worker is not None
        worker.resume()
        wait_until(lambda: BANNER in term.text(), 30, "the banner")
        # Once a screenful has scrolled past the banner and the output pauses, a
        # one-line reminder shows the URL again (not the banner).
        for _ in range(8):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        reminder = f"-- UI http://127.0.0.1:{port} | Flower http://127.0.0.1:{flower_port}"
        wait_until(lambda: reminder in term.text(), 20, "the reminder")

        # Ctrl-C: the terminal's SIGINT reaches `monkey up` alone, which stops each
        # child once (no "Hitting Ctrl+C again", no traceback from a second signal).
        children = psutil.Process(proc.pid).children(recursive=True)
        os.write(term.master, b"\x03")
        assert proc.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        if worker is not None and worker.is_running():
            worker.resume()
        _reap(proc, children)
        term.close()

    out = term.text()
    assert out.count(BANNER) == 1
    assert "stopping..." in out
    assert "Ctrl+C again" not in out and "Traceback" not in out
    # Redis outlives the services that drain into it (its own process group).
    assert "Connection refused" not in out and "Error 111" not in out
    key = (tmp_path / "api-key").read_text().strip()
    assert f"Your API key:       {key}" in out
    assert "\x1b[" not in out  # NO_COLOR
    prefixed = re.compile(r"^(api|llm-worker|flower|monkey) +\| (.*)$")
    services, lines = set(), [ln for ln in out.splitlines() if ln.strip()]
    for line in lines:
        if line.startswith(("  ", "-- UI ")) or line == "^C":  # banner, reminder, echo
            continue
        match = prefixed.match(line)
        assert match, f"a line without a service prefix: {line!r}"
        services.add(match.group(1))
        assert not match.group(2).startswith("{"), f"JSON on a terminal: {line!r}"
    assert services == {"api", "llm-worker", "flower", "monkey"}
    assert re.search(r"^api +\| \d\d:\d\d:\d\d INFO  .*GET /healthz", out, re.M)
    assert re.search(r"^llm-worker +\| celery \S+ llm-\d+@\S+: queues llm", out, re.M)
    assert "[tasks]" not in out and "-------------- " not in out
    waiting = out.index("waiting for: llm-worker")
    assert waiting < out.index(BANNER)
