"""Chat sessions: what clients send and what they get back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from chat_service.transport.messages import (
    STORABLE_TEXT_PATTERN,
    DocumentedPattern,
    MessageOut,
    PageQuery,
    storable_text,
)


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
    status: Literal["open", "pending", "assigned", "resolved", "closed"] = Field(
        description="Where the case stands."
    )
    assignee_id: uuid.UUID | None = Field(description="The agent the case is assigned to.")
    last_activity_at: datetime = Field(description="When the last message or event came (UTC).")
    priority: Literal["low", "normal", "high", "urgent"] | None = Field(
        default=None,
        exclude_if=lambda priority: priority is None,
        description="How urgent the case is (support side only).",
    )
    tags: list[str] | None = Field(
        default=None,
        exclude_if=lambda tags: tags is None,
        description="Labels for the inbox's filters (support side only).",
    )
    customer_token: str | None = Field(
        default=None,
        exclude_if=lambda token: token is None,
        description="Only in the answer that opened the session, shown this once: the "
        "customer's credential for this session (`Authorization: Bearer ...`).",
    )


Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
SearchText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(storable_text),
    DocumentedPattern(STORABLE_TEXT_PATTERN),
]


class SessionPatch(BaseModel):
    """Changes to a support case; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["open", "pending", "assigned", "resolved", "closed"] | None = Field(
        default=None,
        description="The new status. Allowed: open → pending, assigned, resolved, closed; "
        "pending → assigned, resolved, closed; assigned → pending, resolved, closed; "
        "resolved → pending, assigned, closed (reopen); closed is final.",
    )
    assignee_id: uuid.UUID | None = Field(
        default=None,
        description="An active agent of the tenant, or null to unassign. Assigning an open "
        "or pending case makes it `assigned`; unassigning makes it `pending`.",
    )
    priority: Literal["low", "normal", "high", "urgent"] | None = Field(
        default=None, description="How urgent the case is."
    )
    tags: list[Tag] | None = Field(
        default=None,
        max_length=20,
        description="The whole set of tags (replaces the current one): up to 20, each 1-64 "
        "letters, digits, `_ . : -`.",
    )

    @field_validator("assignee_id", mode="before")
    @classmethod
    def _uuid_text(cls, value: object) -> object:
        # Strict mode takes UUIDs only as objects; JSON has them as strings.
        return uuid.UUID(value) if isinstance(value, str) else value


class InboxQuery(PageQuery):
    """Filters and paging of the agents' inbox."""

    status: str | None = Field(
        default=None,
        pattern=r"^(open|pending|assigned|resolved|closed)(,(open|pending|assigned|resolved|closed))*$",
        description="One status or several, comma-separated (`open,pending`).",
    )
    assignee: str | None = Field(
        default=None,
        pattern=r"^(me|none|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
        r"[0-9a-fA-F]{12})$",
        description="An agent's id, `me` (the calling agent) or `none` (unassigned).",
    )
    priority: Literal["low", "normal", "high", "urgent"] | None = Field(
        default=None, description="Only cases of this priority."
    )
    tag: Tag | None = Field(default=None, description="Only cases with this tag.")
    q: SearchText | None = Field(
        default=None,
        description="Text to look for in the cases' messages, ignoring case (on SQLite, "
        "for the letters A to Z only).",
    )


class InboxItemOut(BaseModel):
    """A session in the inbox (without its messages)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The session's id.")
    created_at: datetime = Field(description="When the session was opened (UTC).")
    updated_at: datetime = Field(description="When the session last changed (UTC).")
    last_activity_at: datetime = Field(description="When the last message or event came (UTC).")
    status: Literal["open", "pending", "assigned", "resolved", "closed"] = Field(
        description="Where the case stands."
    )
    assignee_id: uuid.UUID | None = Field(description="The agent the case is assigned to.")
    priority: Literal["low", "normal", "high", "urgent"] = Field(description="How urgent.")
    tags: list[str] = Field(description="The case's tags.")
    last_seq: int = Field(description="The `seq` of the newest message or event.")
    unread_count: int = Field(
        description="Messages from the customer or other agents after the caller's last "
        "read `seq` (see `POST /sessions/{id}/read`), counted up to 100: 100 means 100 "
        "or more."
    )


class InboxPageOut(BaseModel):
    """A page of the inbox, most recent activity first."""

    items: list[InboxItemOut] = Field(description="The sessions of this page.")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null when this is the last page."
    )


class ReadMarker(BaseModel):
    """How far the caller has read a session."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seq: int = Field(ge=0, description="The `seq` of the last message the caller has seen.")
