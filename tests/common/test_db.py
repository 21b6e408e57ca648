"""The workers' Postgres connections give up on a partitioned peer within seconds; the
API's autocommit sessions and the workers' autocommit writes on SQLite use connections
born autocommit."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text

from common.db import (
    async_sessions,
    dispose_own_pool,
    make_async_engine,
    make_autocommit_engine,
    make_sync_autocommit_engine,
    make_sync_engine,
)
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


class CountingQueue:
    """aiosqlite's queue of calls for its connection thread, counting what is put on it:
    each is a handover to that thread and back (tens of microseconds, more under load)."""

    def __init__(self, queue: Any) -> None:
        self.queue, self.puts = queue, 0

    def put_nowait(self, item: Any) -> None:
        self.puts += 1
        self.queue.put_nowait(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


def test_sqlite_autocommit_sessions_cost_only_their_statements(tmp_path):
    """An autocommit session on SQLite: its write is visible to another connection with
    no transaction around it, and a statement and its commit cost four handovers to
    aiosqlite's thread (cursor, execute, close, commit), checkout and checkin none.
    With the shared pool flipped to autocommit per checkout it cost ten: the level
    set on checkout; on checkin its reset, a PRAGMA and a rollback."""
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}")
    queues: list[CountingQueue] = []

    def count(dbapi_conn: Any, _record: Any) -> None:
        inner = dbapi_conn._connection  # the aiosqlite.Connection
        inner._tx = CountingQueue(inner._tx)
        queues.append(inner._tx)

    async def run() -> tuple[int, int]:
        engine = make_async_engine(settings)
        auto = make_autocommit_engine(engine, settings)
        event.listen(auto.sync_engine, "connect", count)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (n INTEGER)"))
            sessions = async_sessions(auto)
            async with sessions() as s:  # the pool's first connection
                await s.execute(text("SELECT 1"))
            before = sum(q.puts for q in queues)
            for n in range(10):
                async with sessions() as s:
                    await s.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
                    await s.commit()
            puts = sum(q.puts for q in queues) - before
            async with engine.connect() as other:
                seen = (await other.execute(text("SELECT count(*) FROM t"))).scalar_one()
            return puts, seen
        finally:
            await auto.dispose()
            await engine.dispose()

    puts, seen = asyncio.run(run())
    assert seen == 10
    assert puts <= 10 * 4, f"{puts / 10} handovers a statement"


def test_sqlite_worker_writes_send_only_their_statements(tmp_path):
    """A worker's single-statement write on SQLite (claim, finish, heartbeat) sends that
    statement and nothing else, and is visible to another connection at once. On the
    shared pool flipped to autocommit per checkout, every checkin also sent a PRAGMA
    to reset the isolation level."""
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}")
    sent: list[str] = []

    def trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(sent.append)

    engine = make_sync_engine(settings)
    auto = make_sync_autocommit_engine(engine, settings)
    event.listen(auto, "connect", trace)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER)"))
        with auto.connect() as conn:  # the pool's first connection
            conn.execute(text("SELECT 1"))
        sent.clear()
        for n in range(10):
            with auto.connect() as conn:
                conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        with engine.connect() as other:
            assert other.execute(text("SELECT count(*) FROM t")).scalar_one() == 10
        assert sent == [f"INSERT INTO t VALUES ({n})" for n in range(10)], sent
    finally:
        dispose_own_pool(auto, engine)
        engine.dispose()
