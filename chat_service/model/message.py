"""A message within a chat session."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.model.base import Base


class AuthorType(enum.StrEnum):
    """Who wrote a message."""

    CUSTOMER = "customer"
    SERVICE_AGENT = "service_agent"


class Message(Base):
    """One message; ``seq`` orders the messages of its session (1, 2, 3, ...)."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    seq: Mapped[int]
    author_type: Mapped[AuthorType] = mapped_column(
        Enum(
            AuthorType,
            name="author_type",
            native_enum=False,
            create_constraint=True,
            length=32,
            values_callable=lambda kinds: [kind.value for kind in kinds],
            validate_strings=True,
        )
    )
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
