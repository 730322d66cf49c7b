"""Indexes for the inbox's filters: sessions by tag, and message text (PostgreSQL).

The text index is a trigram index for case-insensitive substring search: a GIN index
of pg_trgm, a trusted extension (PostgreSQL 13+) that the database's owner may create.
SQLite gets no text index: it searches by reading the messages, off the event loop.
(An FTS5 index would be keyed on the messages' rowids, which a dump and restore or a
table rebuild renumbers, and it keeps deleted text until its segments merge.)

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


def upgrade() -> None:
    op.create_index(op.f("ix_session_tags_tag_session_id"), "session_tags", ["tag", "session_id"])
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
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_messages_content_trgm", table_name="messages")
