"""Test plumbing shared by fixtures and tests: scratch databases, migrations, settings."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import make_url

from chat_service.config import DEFAULT_CONFIG_FILE, Settings, load_without_environment

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL_VARIABLE = "CHAT_SERVICE_TEST_POSTGRES_URL"


def postgres_admin_url() -> str:
    """The URL of the PostgreSQL server the tests use; fails the test when it is not set."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        import pytest

        pytest.fail(f"PostgreSQL tests need {POSTGRES_URL_VARIABLE} (they fail, never skip)")
    return url


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    return config


def alembic_upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def alembic_downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for the duration of the block."""
    name = f"chat_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def load_test_settings(**overrides: Any) -> Settings:
    """The shipped TOML plus ``overrides`` (section -> {key: value}); never the environment.

    Rate limits are off unless ``overrides`` turn them on: tests post from one address
    as fast as they can. A refusal is answered at once unless they say otherwise.
    """
    sections = {**overrides}
    sections["rate_limits"] = {
        "enabled": False,
        "refusal_delay_seconds": 0,
        **sections.get("rate_limits", {}),
    }
    return load_without_environment([ROOT / DEFAULT_CONFIG_FILE], sections)
