"""`monkey keys create --weight` and `monkey keys weight`: a key's share of the queue
(api/services/fair.py), set from the command line and refused when out of range."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from common.migrate import upgrade
from common.settings import Settings
from tests.conftest import REPO


def monkey(db: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "monkey.cli", "keys", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)


def weights(db: str) -> dict[str, float]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, weight FROM api_keys"))


def test_a_keys_weight_is_set_at_creation_and_changed_later(tmp_path):
    db = str(tmp_path / "monkey.db")
    upgrade(Settings(DATABASE_URL=f"sqlite:///{db}", MONKEY_DATA_DIR=str(tmp_path)))
    assert monkey(db, "create", "--name", "etl", "--weight", "2").returncode == 0
    assert monkey(db, "create", "--name", "alice").returncode == 0
    assert weights(db) == {"etl": 2.0, "alice": 1.0}

    done = monkey(db, "weight", "alice", "0.5")
    assert done.returncode == 0, done.stderr
    assert weights(db) == {"etl": 2.0, "alice": 0.5}

    refused = monkey(db, "weight", "alice", "0")
    assert refused.returncode == 2 and "0<x<=1000" in refused.stderr.replace(" ", "")
    unknown = monkey(db, "weight", "bob", "2")
    assert unknown.returncode == 1 and "no API key with the id or name 'bob'" in unknown.stderr
    assert weights(db) == {"etl": 2.0, "alice": 0.5}
