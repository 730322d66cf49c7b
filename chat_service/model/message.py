"""A message within a chat session."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.model.base import Base, string_enum


class AuthorType(enum.StrEnum):
    """Who wrote a message."""

    CUSTOMER = "customer"
    SERVICE_AGENT = "service_agent"
    SYSTEM = "system"


class MessageKind(enum.StrEnum):
    """A message someone wrote, or an event the service recorded (a status change...)."""

    MESSAGE = "message"
    EVENT = "event"


class Visibility(enum.StrEnum):
    """Who may see a message: everyone in the session, or the support side alone."""

    PUBLIC = "public"
    INTERNAL = "internal"


class Message(Base):
    """One message; ``seq`` orders the messages of its session (1, 2, 3, ...).

    ``author_id`` is the agent (or service key) that wrote it, when there is one. A
    deleted message keeps its row and ``seq`` with its content emptied (a tombstone).
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("session_id", "seq"),
        # The inbox's text search (`q`, a case-insensitive substring) on PostgreSQL: a
        # trigram index finds the sessions with a rare word without reading every message.
        Index(
            "ix_messages_content_trgm",
            "content",
            postgresql_using="gin",
            postgresql_ops={"content": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    seq: Mapped[int]
    author_type: Mapped[AuthorType] = mapped_column(string_enum(AuthorType, "author_type"))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    kind: Mapped[MessageKind] = mapped_column(
        string_enum(MessageKind, "message_kind"), default=MessageKind.MESSAGE
    )
    visibility: Mapped[Visibility] = mapped_column(
        string_enum(Visibility, "visibility"), default=Visibility.PUBLIC
    )
    author_id: Mapped[uuid.UUID | None]
    edited_at: Mapped[datetime | None]
    deleted: Mapped[bool] = mapped_column(default=False)
    event: Mapped[dict[str, Any] | None] = mapped_column(JSON)
