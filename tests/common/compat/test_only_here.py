"""The library internals that the compat modules hold are used nowhere else."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

PACKAGES = ("api", "common", "workers", "monkey")
# pattern -> the one module allowed to use it
INTERNALS = {
    r"kombu\.transport": "common/compat/kombu_redis.py",
    r"celery\.worker\.consumer|_flush_events|on_send_event_buffered":
        "workers/compat/celery_consumer.py",
    r"\._pool\b": "workers/compat/httpx_pool.py",
    r"[\"']unacked(_index)?[\"']": "common/compat/kombu_redis.py",
}


@pytest.mark.parametrize("pattern", sorted(INTERNALS))
def test_used_only_in_its_compat_module(pattern):
    found = {
        str(path.relative_to(REPO))
        for package in PACKAGES for path in (REPO / package).rglob("*.py")
        if re.search(pattern, path.read_text(encoding="utf-8"))
    }
    assert found == {INTERNALS[pattern]}
