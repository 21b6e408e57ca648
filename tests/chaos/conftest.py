"""A private PostgreSQL cluster that a test may stop and start (the shared one stays up)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from monkey.embedded import free_port
from tests.chaos.hosts import Host, unavailable
from tests.conftest import need


class PrivatePostgres:
    def __init__(self, root: Path):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins and not shutil.which("initdb"):
            need("PostgreSQL server binaries", "initdb not found")
        self.bin = Path(bins[-1]) if bins else Path(shutil.which("initdb")).parent
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        self._run(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])

    def _run(self, args: list[str]) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(["pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                   "-w", "start"])
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=1).close()
                return
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])


@pytest.fixture
def private_postgres():
    # Outside pytest's tmp folder (mode 700 to root), so the postgres user can reach it.
    root = Path(tempfile.mkdtemp(prefix="monkey-pg-"))
    pg = PrivatePostgres(root)
    pg.start()
    yield pg
    try:
        pg.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_host():
    """Factory: make_host() -> a Host, another machine in a network namespace
    (tests/chaos/hosts.py), removed with its processes when the test ends. Ask for it
    after make_stack, so that its hosts go first."""
    made: list[Host] = []

    def factory() -> Host:
        reason = unavailable()
        if reason:
            need("network namespaces", reason)
        try:
            made.append(Host())
        except RuntimeError as exc:  # root without the right (a container without NET_ADMIN)
            need("network namespaces", str(exc))
        return made[-1]

    yield factory
    for host in made:
        host.close()
