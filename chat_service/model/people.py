"""Tenants, their agents and their API keys."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.model.base import Base, string_enum


class Tenant(Base):
    """A company using the service; every other row belongs to one."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Role(enum.StrEnum):
    """What a member of the support side may do."""

    AGENT = "agent"
    ADMIN = "admin"


class Agent(Base):
    """A member of a tenant's support side (agent or admin).

    ``external_subject`` is the identity provider's subject for agents that sign in
    with a JWT; the row is made on first sight.
    """

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "external_subject"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    role: Mapped[Role] = mapped_column(string_enum(Role, "agent_role"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    external_subject: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class ApiKey(Base):
    """A secret that authenticates a machine client (or an agent) with scopes.

    Only the SHA-256 hash of the key is stored; ``prefix`` (its first characters)
    lets people tell keys apart. With ``agent_id`` the key acts as that agent.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class LiveTicket(Base):
    """A short-lived, single-use pass to a live stream.

    For clients that cannot send an ``Authorization`` header (browsers opening a
    WebSocket or an EventSource).

    It holds what the credential that asked for it allowed; only its SHA-256 hash is
    stored, and using it deletes it.
    """

    __tablename__ = "live_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    principal_id: Mapped[uuid.UUID | None]
    role: Mapped[str | None] = mapped_column(String(16))
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    scopes: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(index=True)
