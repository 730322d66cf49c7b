"""What the database itself guarantees, whatever the code above it does."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from chat_service.model import DEFAULT_TENANT_ID, Database
from tests.factories import create_session, send_message

if TYPE_CHECKING:
    from quart.typing import TestClientProtocol


async def insert(db: Database, statement: str, **values: object) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text(statement), values)


def ident(db: Database, value: uuid.UUID) -> object:
    """A UUID as each database stores it (CHAR(32) hex on SQLite)."""
    return value.hex if db.dialect == "sqlite" else value


async def add_rows(
    db: Database, *, last_seq: int, author_type: str, seq_twice: bool, foreign: bool
) -> None:
    """A session, then one (or the same seq twice) message for it or for an unknown one."""
    session_id = uuid.uuid4()
    add_session = (
        "INSERT INTO chat_sessions (id, created_at, updated_at, last_seq, tenant_id, status,"
        " priority, last_activity_at) VALUES (:id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
        " :last_seq, :tenant_id, 'open', 'normal', CURRENT_TIMESTAMP)"
    )
    add_message = (
        "INSERT INTO messages (id, session_id, seq, author_type, content, created_at, kind,"
        " visibility, deleted) VALUES (:id, :session_id, 1, :author_type, 'hi',"
        " CURRENT_TIMESTAMP, 'message', 'public', false)"
    )
    await insert(
        db,
        add_session,
        id=ident(db, session_id),
        last_seq=last_seq,
        tenant_id=ident(db, DEFAULT_TENANT_ID),
    )
    target = ident(db, uuid.uuid4() if foreign else session_id)
    for _ in range(2 if seq_twice else 1):
        await insert(
            db, add_message, id=ident(db, uuid.uuid4()), session_id=target, author_type=author_type
        )


async def test_database_accepts_valid_rows(db: Database) -> None:
    await add_rows(db, last_seq=1, author_type="service_agent", seq_twice=False, foreign=False)


@pytest.mark.parametrize(
    ("last_seq", "author_type", "seq_twice", "foreign"),
    [
        (-1, "customer", False, False),
        (1, "robot", False, False),
        (1, "customer", True, False),
        (1, "customer", False, True),
    ],
)
async def test_database_refuses_rows_the_model_forbids(
    db: Database, last_seq: int, author_type: str, seq_twice: bool, foreign: bool
) -> None:
    with pytest.raises(IntegrityError):
        await add_rows(
            db, last_seq=last_seq, author_type=author_type, seq_twice=seq_twice, foreign=foreign
        )


async def test_connections_are_quiet(db: Database) -> None:
    assert db.engine.echo is False
    if db.dialect != "sqlite":
        return
    async with db.engine.connect() as connection:
        assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert await connection.scalar(text("PRAGMA busy_timeout")) == 10_000


async def test_service_recovers_when_its_connections_are_killed(
    db: Database, client: TestClientProtocol
) -> None:
    """Pooled connections die (a database restart, a failover): at most one 503, then 201s."""
    if db.dialect == "sqlite":
        pytest.skip("an embedded database has no server connections to lose")
    session = await create_session(client)
    for _ in range(3):  # fill the pool with connections that have been used
        await send_message(client, session["id"], "before", prefer="return=minimal")
    # From outside the service's pool, as an operator or a failover would.
    outside = create_async_engine(db.engine.url, poolclass=NullPool)
    try:
        async with outside.connect() as connection:
            killed = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await outside.dispose()
    assert killed >= 1
    statuses = []
    for index in range(4):
        response = await client.post(
            f"/sessions/{session['id']}/messages",
            json={"author_type": "customer", "content": f"after {index}"},
            headers={"Prefer": "return=minimal"},
        )
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert (await response.get_json())["status"] == 503
    assert statuses.count(503) <= 1, statuses
    assert statuses[-2:] == [201, 201], statuses
