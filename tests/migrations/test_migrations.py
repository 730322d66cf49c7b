"""Alembic owns the schema: up, down to nothing, up again, and it matches the models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from chat_service.model import SCHEMA_REVISION, Base
from tests.conftest import BACKENDS
from tests.support import (
    alembic_config,
    alembic_downgrade,
    alembic_upgrade,
    postgres_admin_url,
    scratch_database,
    sqlite_url,
)


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "migrations.sqlite3")
        return
    with scratch_database(postgres_admin_url()) as url:
        yield url


def inspect_database(url: str) -> tuple[set[str], list[Any]]:
    """The tables present, and every difference between the database and the models."""

    def compare(connection: Connection) -> tuple[set[str], list[Any]]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return set(inspect(connection).get_table_names()), compare_metadata(context, Base.metadata)

    async def run() -> tuple[set[str], list[Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_downgrade_upgrade_matches_the_models(empty_database: str) -> None:
    alembic_upgrade(empty_database)
    tables, differences = inspect_database(empty_database)
    assert {"chat_sessions", "messages"} <= tables
    assert differences == []

    alembic_downgrade(empty_database, "base")
    tables, _ = inspect_database(empty_database)
    assert tables <= {"alembic_version"}

    alembic_upgrade(empty_database)
    tables, differences = inspect_database(empty_database)
    assert {"chat_sessions", "messages"} <= tables
    assert differences == []


def test_models_name_the_newest_revision() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))

    assert script.get_current_head() == SCHEMA_REVISION
