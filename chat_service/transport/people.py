"""Agents and API keys: what admins send and get back."""

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
    WHITESPACE,
    DocumentedPattern,
    storable_text,
)

# 1 to 200 characters as sent, not blank; stored without the whitespace around them.
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(storable_text),
    DocumentedPattern(STORABLE_TEXT_PATTERN),
    AfterValidator(str.strip),
]
Email = Annotated[
    str,
    StringConstraints(pattern=rf"^[^@\x00{WHITESPACE}]{{1,64}}@[^@\x00{WHITESPACE}]{{1,255}}$"),
    AfterValidator(storable_text),
]
RoleName = Literal["agent", "admin"]
ScopeName = Literal["sessions:read", "sessions:write", "admin"]


class NewAgent(BaseModel):
    """An agent or admin to add to the tenant."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name = Field(description="How the agent is shown.")
    email: Email | None = Field(default=None, description="The agent's email address.")
    role: RoleName = Field(default="agent", description="`admin` can also manage agents and keys.")


class AgentPatch(BaseModel):
    """Changes to an agent; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name | None = Field(default=None, description="How the agent is shown.")
    email: Email | None = Field(default=None, description="The agent's email address.")
    role: RoleName | None = Field(default=None, description="`agent` or `admin`.")
    active: bool | None = Field(
        default=None, description="false: the agent's keys and tokens stop working at once."
    )


class AgentOut(BaseModel):
    """A member of the tenant's support side."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The agent's id (the `assignee_id` of cases).")
    role: RoleName = Field(description="`agent` or `admin`.")
    name: str = Field(description="How the agent is shown.")
    email: str | None = Field(description="The agent's email address.")
    external_subject: str | None = Field(
        description="The identity provider's subject, for agents who sign in with a JWT."
    )
    active: bool = Field(description="Whether the agent can sign in.")
    created_at: datetime = Field(description="When the agent was added (UTC).")


class AgentListOut(BaseModel):
    """A page of the tenant's agents, oldest first."""

    model_config = ConfigDict(from_attributes=True)

    items: list[AgentOut] = Field(description="The agents.")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null when this is the last page."
    )


class NewApiKey(BaseModel):
    """An API key to create."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name = Field(description="What the key is for, to tell keys apart.")
    scopes: list[ScopeName] = Field(
        min_length=1,
        max_length=3,
        description="`sessions:read`, `sessions:write`, `admin`. With `agent_id`, the "
        "agent's role bounds them.",
    )
    agent_id: uuid.UUID | None = Field(
        default=None,
        description="Make the key act as this agent (a personal key); without it, the key "
        "is a service key for a machine client.",
    )

    @field_validator("agent_id", mode="before")
    @classmethod
    def _uuid_text(cls, value: object) -> object:
        # Strict mode takes UUIDs only as objects; JSON has them as strings.
        return uuid.UUID(value) if isinstance(value, str) else value


class ApiKeyOut(BaseModel):
    """An API key (never the key itself, except once at creation)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The key's id.")
    name: str = Field(description="What the key is for.")
    prefix: str = Field(description="The key's first characters, to recognise it.")
    scopes: list[ScopeName] = Field(description="What the key allows.")
    agent_id: uuid.UUID | None = Field(description="The agent the key acts as, if any.")
    created_at: datetime = Field(description="When the key was created (UTC).")
    revoked_at: datetime | None = Field(description="When the key was revoked (UTC).")
    key: str | None = Field(
        default=None,
        exclude_if=lambda key: key is None,
        description="The key itself: only in the answer that created it. Store it now; "
        "only its hash is kept.",
    )


class ApiKeyListOut(BaseModel):
    """A page of the tenant's API keys, oldest first, revoked ones included."""

    model_config = ConfigDict(from_attributes=True)

    items: list[ApiKeyOut] = Field(description="The keys.")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null when this is the last page."
    )
