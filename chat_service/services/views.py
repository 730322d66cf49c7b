"""Small frozen results that services hand back to routes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chat_service.model import AuthorType, MessageKind, Priority, SessionStatus, Visibility


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as stored (a tombstone's content is empty)."""

    id: uuid.UUID
    session_id: uuid.UUID
    seq: int
    author_type: AuthorType
    content: str
    created_at: datetime
    kind: MessageKind = MessageKind.MESSAGE
    visibility: Visibility = Visibility.PUBLIC
    author_id: uuid.UUID | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    event: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, session_id: uuid.UUID, row: Any) -> MessageView:
        """From a row of ``MESSAGE_COLUMNS`` of a session's message."""
        message_id, seq, author_type, content, created_at, *rest = row
        return cls(message_id, session_id, seq, author_type, content, created_at, *rest)

    def as_row(self) -> dict[str, Any]:
        """The values of a ``messages`` row, for an INSERT."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "seq": self.seq,
            "author_type": self.author_type,
            "content": self.content,
            "created_at": self.created_at,
            "kind": self.kind,
            "visibility": self.visibility,
            "author_id": self.author_id,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
            "event": self.event,
        }


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session's own columns."""

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    last_seq: int
    tenant_id: uuid.UUID
    status: SessionStatus
    assignee_id: uuid.UUID | None
    priority: Priority
    last_activity_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session with its most recent messages, oldest first."""

    session: SessionRow
    messages: Sequence[MessageView]
    truncated: bool
    # None when a customer reads: tags and priority are the support side's triage.
    tags: Sequence[str] | None = None
    # Only in the answer that created the session: shown once, stored as a hash.
    customer_token: str | None = None

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

    @property
    def status(self) -> SessionStatus:
        """Where the case stands."""
        return self.session.status

    @property
    def assignee_id(self) -> uuid.UUID | None:
        """The agent the case is assigned to."""
        return self.session.assignee_id

    @property
    def priority(self) -> Priority | None:
        """How urgent the case is (None for customers)."""
        return None if self.tags is None else self.session.priority

    @property
    def last_activity_at(self) -> datetime:
        """When the last message or event was recorded."""
        return self.session.last_activity_at


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
