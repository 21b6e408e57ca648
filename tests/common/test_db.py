"""The workers' Postgres connections give up on a partitioned peer within seconds."""

from __future__ import annotations

from sqlalchemy import text

from common.db import make_sync_engine
from common.settings import Settings
from tests.conftest import make_database


def test_worker_connections_time_out_unanswered_packets(tmp_path):
    """Without these, a connection to a Postgres behind a cut link hangs in the kernel's
    retransmissions for about 15 minutes (tests/chaos/test_partitions.py cuts links)."""
    db = make_database("postgres", tmp_path)
    engine = make_sync_engine(Settings(DATABASE_URL=db.url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            params = conn.connection.dbapi_connection.info.get_parameters()
        assert int(params["tcp_user_timeout"]) <= 30_000
        assert params["keepalives"] == "1"
        assert int(params["keepalives_idle"]) + 3 * int(params["keepalives_interval"]) <= 30
        assert int(params["connect_timeout"]) <= 10
    finally:
        engine.dispose()
        if db.drop:
            db.drop()
