"""`monkey up` as a platform stops it: SIGTERM ends the whole stack, children included,
within the workers' drain window (a redeploy of the one-service setup must not leave
an API or worker running behind the new one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from monkey.embedded import free_port
from tests.conftest import FAST_ENV, REPO, wait_until

pytestmark = pytest.mark.e2e  # a whole stack in subprocesses


def test_sigterm_stops_every_child_and_exits_0(tmp_path):
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(FAST_ENV, MONKEY_DATA_DIR=str(tmp_path), MONKEY_DRAIN_S="2")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "monkey.cli", "up", "--port", str(port),
         "--flower-port", str(flower_port), "--no-gpu-worker"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, "monkey up ready", proc=None)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # api (+ its control child), llm worker, flower
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        elapsed = time.monotonic() - started
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        assert elapsed < 2 + 4 + 3, f"stopping took {elapsed:.1f}s"
    finally:
        for child in children:
            if child.is_running():
                child.kill()
        if proc.poll() is None:
            proc.kill()
        log.close()
