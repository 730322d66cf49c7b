"""Small frozen results that services hand back to routes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chat_service.model import AuthorType


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as stored."""

    id: uuid.UUID
    session_id: uuid.UUID
    seq: int
    author_type: AuthorType
    content: str
    created_at: datetime

    @classmethod
    def from_row(cls, session_id: uuid.UUID, row: Any) -> MessageView:
        """From a row of ``MESSAGE_COLUMNS`` of a session's message."""
        message_id, seq, author_type, content, created_at = row
        return cls(message_id, session_id, seq, author_type, content, created_at)

    def as_row(self) -> dict[str, Any]:
        """The values of a ``messages`` row, for an INSERT."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "seq": self.seq,
            "author_type": self.author_type,
            "content": self.content,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session's own columns."""

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    last_seq: int


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session with its most recent messages, oldest first."""

    session: SessionRow
    messages: Sequence[MessageView]
    truncated: bool

    # The original contract's fields, read straight off the view by the transport models.
    @property
    def id(self) -> uuid.UUID:
        """The session's id."""
        return self.session.id

    @property
    def created_at(self) -> datetime:
        """When the session was opened."""
        return self.session.created_at

    @property
    def updated_at(self) -> datetime:
        """When the session last changed."""
        return self.session.updated_at


@dataclass(frozen=True, slots=True)
class MessagePage:
    """One page of a session's messages and the cursor to the next page, if any."""

    items: Sequence[MessageView]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A new message and, when asked for, the session as it stands after it."""

    message: MessageView
    session: SessionView | None
