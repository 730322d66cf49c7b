"""Live delivery: tickets, stream parameters, events, and WebSocket client frames."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from chat_service.transport.messages import (
    AuthorTypeName,
    VisibilityName,
    storable_text,
    whole_number,
    within_limit,
)

TICKET_MAX_CHARS = 128


class TicketOut(BaseModel):
    """A single-use pass to open one live stream."""

    ticket: str = Field(
        description="Pass as `?ticket=` when opening a stream (WebSocket or SSE); valid "
        "once, for `live.ticket_seconds` (30 s by default)."
    )
    expires_at: datetime = Field(description="When the ticket stops working (UTC).")


def _position(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,19}", value):
        raise PydanticCustomError("int_parsing", "Input should be a whole number")
    return value


class _StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str | None = Field(
        default=None,
        max_length=TICKET_MAX_CHARS,
        description="A ticket from `POST /live/tickets`, for clients that cannot send "
        "an `Authorization` header.",
    )


class SessionStreamQuery(_StreamQuery):
    """Query parameters of a session's stream."""

    after: int | None = Field(
        default=None,
        ge=0,
        le=999_999_999,  # whole_number: at most 9 digits
        description="Replay every event after this `seq`, then go live (0: the whole "
        "history). Without it (and without `Last-Event-ID`) the stream starts now.",
    )

    @field_validator("after", mode="before")
    @classmethod
    def _digits_only(cls, value: object) -> object:
        return whole_number(value)


class TenantStreamQuery(_StreamQuery):
    """Query parameters of the tenant's stream."""

    after: int | None = Field(
        default=None,
        ge=0,
        le=9_999_999_999_999_999_999,  # _position: at most 19 digits
        description="The `id` of the last event seen: first replays the sessions changed "
        "since then (as `session` events), then goes live.",
    )

    @field_validator("after", mode="before")
    @classmethod
    def _digits_only(cls, value: object) -> object:
        return _position(value)


class ActivityOut(BaseModel):
    """Someone is typing, or has read a session up to `seq`."""

    model_config = ConfigDict(from_attributes=True)

    session_id: uuid.UUID
    actor: str = Field(description="`customer`, `agent`, `service` or `local`.")
    actor_id: uuid.UUID | None = Field(description="The agent or key; null for customers.")
    seq: int | None = Field(description="Read events: the last `seq` seen.")


class LiveSessionOut(BaseModel):
    """A session as the inbox shows it (tenant streams)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: str
    assignee_id: uuid.UUID | None
    priority: str
    tags: list[str]
    last_seq: int = Field(description="The seq of the session's latest message or event.")
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime


ContentText = Annotated[str, AfterValidator(storable_text)]


class SendFrame(BaseModel):
    """Post a message (as `POST /sessions/{session_id}/messages` does)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["message"]
    content: ContentText = Field(min_length=1)
    visibility: VisibilityName = "public"
    author_type: AuthorTypeName | None = None
    ref: str | None = Field(
        default=None, max_length=64, description="Echoed in the `ack` or `error` frame."
    )

    _within_limit = field_validator("content")(within_limit)


class TypingFrame(BaseModel):
    """Tell the session that the caller is typing."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["typing"]
    ref: str | None = Field(default=None, max_length=64)


class ReadFrame(BaseModel):
    """Record how far the caller has read (as `POST /sessions/{session_id}/read`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["read"]
    seq: int = Field(ge=0)
    ref: str | None = Field(default=None, max_length=64)


class ClientFrame(BaseModel):
    """A text frame a client sends on a session's WebSocket."""

    frame: SendFrame | TypingFrame | ReadFrame = Field(discriminator="type")
