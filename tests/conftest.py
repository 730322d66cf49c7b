"""Every API test runs once on SQLite and once on PostgreSQL, on a migrated database."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import text

from chat_service.app import create_app
from chat_service.model import DEFAULT_TENANT_SLUG, Database
from chat_service.routes.state import app_state
from tests.live_support import LiveServer, live_server
from tests.support import (
    alembic_upgrade,
    load_test_settings,
    postgres_admin_url,
    scratch_database,
    sqlite_url,
)

BACKENDS = os.environ.get("CHAT_SERVICE_TEST_BACKENDS", "sqlite,postgresql").split(",")


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database at Alembic head, one per backend per run (sync: no event loop yet)."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("db") / "chat.sqlite3")
        alembic_upgrade(url)
        yield url
        return
    with scratch_database(postgres_admin_url()) as url:
        alembic_upgrade(url)
        yield url


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    """Settings a test module or test wants changed (override this fixture)."""
    return {}


@pytest.fixture
async def app(
    database_url: str, settings_overrides: dict[str, dict[str, Any]]
) -> AsyncIterator[Quart]:
    """The application on a wiped database, started (before_serving has run)."""
    sections = {**settings_overrides}
    sections["database"] = {**sections.get("database", {}), "url": database_url}
    application = create_app(load_test_settings(**sections))
    async with application.test_app():
        await wipe(app_state(application).db)
        yield application


@pytest.fixture
async def server(
    database_url: str, settings_overrides: dict[str, dict[str, Any]]
) -> AsyncIterator[LiveServer]:
    """The application served by Hypercorn on 127.0.0.1, on a wiped database."""
    sections = {**settings_overrides}
    sections["database"] = {**sections.get("database", {}), "url": database_url}
    async with live_server(load_test_settings(**sections)) as running:
        await wipe(app_state(running.app).db)
        yield running


@pytest.fixture
def client(app: Quart) -> TestClientProtocol:
    return app.test_client()


@pytest.fixture
def db(app: Quart) -> Database:
    return app_state(app).db


WIPED_TABLES = (
    "idempotency_keys",
    "live_tickets",
    "messages",
    "session_tags",
    "session_reads",
    "chat_sessions",
    "api_keys",
    "agents",
)


async def wipe(db: Database) -> None:
    """Delete every row but the default tenant (before a test, so a failed test leaves
    its rows to look at)."""
    async with db.engine.begin() as connection:
        if db.dialect == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(WIPED_TABLES)}"))
        else:
            for table in WIPED_TABLES:
                await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - constants
        await connection.execute(
            text("DELETE FROM tenants WHERE slug <> :slug"), {"slug": DEFAULT_TENANT_SLUG}
        )
