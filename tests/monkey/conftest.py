"""One stack for the client and CLI tests: SQLite, an API and an llm worker."""

from __future__ import annotations

import pytest

from common.migrate import upgrade
from tests.conftest import Stack, fresh_redis_url, make_database


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_base):
    tmp = tmp_path_factory.mktemp("client")
    s = Stack(make_database("sqlite", tmp), fresh_redis_url(redis_base), tmp)
    upgrade(s.settings)
    s.key = s.new_key()
    s.start_api()
    s.start_worker("llm", concurrency=8)
    yield s
    s.stop()
