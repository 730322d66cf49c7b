"""Alembic environment: async engine, batch mode on SQLite, the models' metadata.

The URL comes from ``config.attributes["url"]`` when a caller (the CLI, the tests)
passes one, else from the service's settings.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from chat_service import config as service_config
from chat_service.model import Base
from chat_service.model.base import schema_filter

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    return service_config.load().database.url.get_secret_value()


def configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else str(url).split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=dialect.startswith("sqlite"),
        include_object=schema_filter(dialect.split("+")[0]),
        compare_type=True,
        literal_binds=connection is None,
    )


def run_offline() -> None:
    configure(url=database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_sync(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    url = database_url()
    if url.startswith("sqlite"):
        from sqlalchemy import make_url

        from chat_service.model.database import _ensure_sqlite_directory

        _ensure_sqlite_directory(make_url(url))
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())
