"""Indexes for the inbox's filters: sessions by tag, and message text.

The text indexes are trigram indexes for case-insensitive substring search. On
PostgreSQL, a GIN index of pg_trgm, a trusted extension (PostgreSQL 13+) that the
database's owner may create. On SQLite, an FTS5 table with the trigram tokenizer over
the messages' text, kept in step by triggers (an external-content table: it stores the
index, not a second copy of the text). A later migration that rebuilds the messages
table in batch mode must recreate the triggers and run the table's 'rebuild'.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SQLITE_TEXT_INDEX = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "content, content='messages', content_rowid='rowid', tokenize='trigram')",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); END",
    # A tombstone's emptied text leaves the index too.
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
)


def upgrade() -> None:
    op.create_index(op.f("ix_session_tags_tag_session_id"), "session_tags", ["tag", "session_id"])
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_TEXT_INDEX:
            op.execute(statement)
        return
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_messages_content_trgm",
        "messages",
        ["content"],
        postgresql_using="gin",
        postgresql_ops={"content": "gin_trgm_ops"},
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_session_tags_tag_session_id"), table_name="session_tags")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("messages_fts_insert", "messages_fts_delete", "messages_fts_update"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE messages_fts")
        return
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_messages_content_trgm", table_name="messages")
