"""Alembic environment: runs migrations over the async drivers (asyncpg, aiosqlite)."""

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import common.batches_db  # noqa: F401 - registers the files and batches tables
import common.responses_db  # noqa: F401 - registers the responses table
import common.swept  # noqa: F401 - registers the tombstones of swept ids
import common.webhooks  # noqa: F401 - registers the webhook tables
from common.db import Base
from common.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _do_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
            await connection.commit()
    finally:
        await engine.dispose()


url = config.attributes.get("url") or get_settings().async_database_url
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async(url))
