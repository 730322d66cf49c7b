"""Chat sessions: what clients send and what they get back."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from chat_service.transport.messages import MessageOut


class NewSession(BaseModel):
    """Options for a new session (none yet: the body may be empty or `{}`)."""

    model_config = ConfigDict(extra="forbid")


class SessionOut(BaseModel):
    """A chat session with its messages in the order they were posted."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The session's id.")
    created_at: datetime = Field(description="When the session was opened (UTC).")
    updated_at: datetime = Field(description="When the session last changed (UTC).")
    messages: list[MessageOut] = Field(
        description="The messages, oldest first; at most the configured inline limit, "
        "the most recent ones."
    )
    messages_truncated: bool | None = Field(
        default=None,
        validation_alias="truncated",
        exclude_if=lambda truncated: not truncated,
        description="Present and true when older messages were left out: "
        "page through them with `GET /sessions/{id}/messages`.",
    )
