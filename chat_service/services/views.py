"""Small frozen results that services hand back to routes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from chat_service.model import ChatSession, Message


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session with its most recent messages, oldest first."""

    session: ChatSession
    messages: Sequence[Message]
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

    items: Sequence[Message]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A new message and, when asked for, the session as it stands after it."""

    message: Message
    session: SessionView | None
