"""Indexes for the inbox's filters: sessions by tag, and message text (PostgreSQL).

The text index is a trigram index for case-insensitive substring search. pg_trgm is a
trusted extension (PostgreSQL 13+): the database's owner may create it. SQLite gets no
text index: it searches by scanning, which suits an embedded database.

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
