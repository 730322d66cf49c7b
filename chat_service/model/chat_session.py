"""A chat session: one support conversation."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.model.base import Base


class ChatSession(Base):
    """A conversation between a customer and the support side.

    ``last_seq`` is the sequence number of the newest message; posting a message
    increments it in the same transaction, which orders the messages.
    """

    __tablename__ = "chat_sessions"
    __table_args__ = (CheckConstraint("last_seq >= 0", name="last_seq_not_negative"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_seq: Mapped[int] = mapped_column(default=0)
