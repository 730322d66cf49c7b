"""Alembic owns the schema: up, down to nothing, up again, and it matches the models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from chat_service.model import DEFAULT_TENANT_ID, SCHEMA_REVISION, Base
from chat_service.model.base import schema_filter
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
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": schema_filter(connection.dialect.name)},
        )
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


def test_sessions_from_before_tenants_join_the_default_tenant(empty_database: str) -> None:
    """Rows written by revision 0001 survive 0002: default tenant, open, normal, public."""
    alembic_upgrade(empty_database, "0001")
    session_id, message_id = uuid.uuid4(), uuid.uuid4()
    updated = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    async def run(statements: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        engine = create_async_engine(empty_database)
        try:
            async with engine.begin() as connection:
                results = [
                    await connection.execute(text(sql), values) for sql, values in statements
                ]
                return [result.all() if result.returns_rows else None for result in results]
        finally:
            await engine.dispose()

    def ident(value: uuid.UUID) -> Any:
        return value.hex if empty_database.startswith("sqlite") else value

    asyncio.run(
        run(
            [
                (
                    "INSERT INTO chat_sessions (id, created_at, updated_at, last_seq) "
                    "VALUES (:id, :at, :at, 1)",
                    {"id": ident(session_id), "at": updated},
                ),
                (
                    "INSERT INTO messages (id, session_id, seq, author_type, content, created_at) "
                    "VALUES (:id, :session, 1, 'customer', 'kept', :at)",
                    {"id": ident(message_id), "session": ident(session_id), "at": updated},
                ),
            ]
        )
    )

    alembic_upgrade(empty_database)

    sessions, messages = asyncio.run(
        run(
            [
                ("SELECT tenant_id, status, priority, last_activity_at FROM chat_sessions", {}),
                ("SELECT content, kind, visibility, deleted FROM messages", {}),
            ]
        )
    )
    ((tenant_id, status, priority, last_activity),) = sessions
    assert str(uuid.UUID(str(tenant_id))) == str(DEFAULT_TENANT_ID)
    assert (status, priority) == ("open", "normal")
    assert str(last_activity).startswith("2026-11-01 12:00:00")
    assert [tuple(row) for row in messages] == [("kept", "message", "public", False)]
