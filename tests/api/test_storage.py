"""What the database itself guarantees, whatever the code above it does."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from chat_service.model import Database


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
        "INSERT INTO chat_sessions (id, created_at, updated_at, last_seq) "
        "VALUES (:id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :last_seq)"
    )
    add_message = (
        "INSERT INTO messages (id, session_id, seq, author_type, content, created_at) "
        "VALUES (:id, :session_id, 1, :author_type, 'hi', CURRENT_TIMESTAMP)"
    )
    await insert(db, add_session, id=ident(db, session_id), last_seq=last_seq)
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


async def test_connections_are_checked_and_quiet(db: Database) -> None:
    assert db.engine.pool._pre_ping  # type: ignore[attr-defined]
    assert db.engine.echo is False
    if db.dialect != "sqlite":
        return
    async with db.engine.connect() as connection:
        assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert await connection.scalar(text("PRAGMA busy_timeout")) == 10_000
