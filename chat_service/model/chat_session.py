"""A chat session: one support conversation, a case with a lifecycle."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.model.base import Base, string_enum


class SessionStatus(enum.StrEnum):
    """Where a support case stands."""

    OPEN = "open"
    PENDING = "pending"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(enum.StrEnum):
    """How urgent a support case is."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class ChatSession(Base):
    """A conversation between a customer and the support side.

    ``last_seq`` is the sequence number of the newest message; posting a message
    increments it in the same transaction, which orders the messages. The customer's
    token is kept only as a SHA-256 hash.
    """

    __tablename__ = "chat_sessions"
    __table_args__ = (
        CheckConstraint("last_seq >= 0", name="last_seq_not_negative"),
        # The agents' inbox: newest activity first, filtered by status or assignee.
        Index(None, "tenant_id", "last_activity_at", "id"),
        Index(None, "tenant_id", "status", "last_activity_at", "id"),
        Index(None, "tenant_id", "assignee_id", "last_activity_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_seq: Mapped[int] = mapped_column(default=0)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[SessionStatus] = mapped_column(
        string_enum(SessionStatus, "session_status"), default=SessionStatus.OPEN
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL")
    )
    priority: Mapped[Priority] = mapped_column(
        string_enum(Priority, "priority"), default=Priority.NORMAL
    )
    last_activity_at: Mapped[datetime]


class SessionTag(Base):
    """A label on a session, for the inbox's filters."""

    __tablename__ = "session_tags"
    # The inbox's tag filter finds the sessions of a tag.
    __table_args__ = (Index(None, "tag", "session_id"),)

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class SessionRead(Base):
    """How far a reader (an agent) has read a session: its last seen ``seq``."""

    __tablename__ = "session_reads"

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    reader_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    last_read_seq: Mapped[int]
