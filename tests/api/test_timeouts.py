"""A write stuck behind a lock answers 503 within the configured time, never hangs."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol
from sqlalchemy import make_url

from chat_service.model import Database
from tests.factories import create_session, problem_of, send_message


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return {"database": {"statement_timeout_seconds": 0.5, "sqlite_busy_timeout_ms": 500}}


@asynccontextmanager
async def session_locked(db: Database, session_id: str) -> AsyncIterator[None]:
    """Another client holds the session's row (PostgreSQL) or the write lock (SQLite)."""
    url = make_url(db.engine.url)
    if db.dialect == "sqlite":
        outside = sqlite3.connect(str(url.database), isolation_level=None)
        outside.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            outside.execute("ROLLBACK")
            outside.close()
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT 1 FROM chat_sessions WHERE id = $1 FOR UPDATE", session_id
            )
            yield
    finally:
        await connection.close()


async def test_a_post_stuck_behind_a_lock_answers_503_then_works_again(
    client: TestClientProtocol, db: Database
) -> None:
    session = await create_session(client)

    async with session_locked(db, session["id"]):
        started = time.monotonic()
        stuck = await asyncio.wait_for(send_message(client, session["id"]), 10)
        took = time.monotonic() - started
    after = await send_message(client, session["id"])

    problem = await problem_of(stuck, 503)
    assert problem["type"] == "urn:chat-service:problem:unavailable"
    assert stuck.headers["Retry-After"].isdigit()
    assert took < 5
    assert after.status_code == 201
