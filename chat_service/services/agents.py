"""Agents and admins: the members of a tenant's support side."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update

from chat_service.errors import Conflict, NotFound
from chat_service.model import Agent, Database, Role, new_id, utc_now
from chat_service.services.access import Principal, Scope
from chat_service.services.cursors import CursorCodec
from chat_service.services.paging import Page, tenant_page, tenant_row

AGENTS = cast(Table, Agent.__table__)


@dataclass(frozen=True, slots=True)
class AgentView:
    """A member of the support side."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    name: str
    email: str | None
    external_subject: str | None
    active: bool
    created_at: datetime


_AGENT_COLUMNS = (
    AGENTS.c.id,
    AGENTS.c.tenant_id,
    AGENTS.c.role,
    AGENTS.c.name,
    AGENTS.c.email,
    AGENTS.c.external_subject,
    AGENTS.c.active,
    AGENTS.c.created_at,
)


async def create_agent(
    db: Database, principal: Principal, *, name: str, email: str | None, role: Role
) -> AgentView:
    """A new agent or admin of the caller's tenant.

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
    """
    principal.require(Scope.ADMIN)
    return await add_agent(db, principal.tenant_id, name=name, email=email, role=role)


async def add_agent(
    db: Database, tenant_id: uuid.UUID, *, name: str, email: str | None, role: Role
) -> AgentView:
    """A new agent of ``tenant_id`` (no access check: the CLI's bootstrap)."""
    agent = AgentView(new_id(), tenant_id, role, name, email, None, True, utc_now())

    def write(connection: Connection) -> None:
        connection.execute(
            insert(AGENTS).values(
                id=agent.id,
                tenant_id=tenant_id,
                role=role,
                name=name,
                email=email,
                external_subject=None,
                active=True,
                created_at=agent.created_at,
            )
        )

    await db.run(write, write=True)
    return agent


async def list_agents(
    db: Database, cursors: CursorCodec, principal: Principal, *, limit: int, after: str | None
) -> Page[AgentView]:
    """A page of the caller's tenant's agents, oldest first (admins only).

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        InvalidCursor: ``after`` was not issued for this list.
    """
    principal.require(Scope.ADMIN)
    rows, next_cursor = await tenant_page(
        db,
        cursors,
        principal,
        kind="agents",
        table=AGENTS,
        columns=_AGENT_COLUMNS,
        limit=limit,
        after=after,
    )
    return Page([AgentView(*row) for row in rows], next_cursor)


async def get_agent(db: Database, principal: Principal, agent_id: uuid.UUID) -> AgentView:
    """One agent of the caller's tenant.

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        NotFound: no such agent in the tenant.
    """
    principal.require(Scope.ADMIN)
    row = await tenant_row(db, principal, table=AGENTS, columns=_AGENT_COLUMNS, row_id=agent_id)
    if row is None:
        raise NotFound(f"agent {agent_id} does not exist")
    return AgentView(*row)


async def update_agent(
    db: Database, principal: Principal, agent_id: uuid.UUID, changes: dict[str, Any]
) -> AgentView:
    """Change an agent's ``name``, ``email``, ``role`` or ``active``, in one transaction.

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        NotFound: no such agent in the tenant.
        Conflict: an admin tried to deactivate or demote themselves.
    """
    principal.require(Scope.ADMIN)
    if agent_id == principal.id and (
        changes.get("active") is False or changes.get("role", Role.ADMIN) is not Role.ADMIN
    ):
        raise Conflict("admins cannot deactivate or demote themselves")

    def write(connection: Connection) -> AgentView | None:
        row = connection.execute(
            select(*_AGENT_COLUMNS)
            .where(AGENTS.c.id == agent_id, AGENTS.c.tenant_id == principal.tenant_id)
            .with_for_update(key_share=True)
        ).first()
        if row is None:
            return None
        if changes:
            connection.execute(update(AGENTS).where(AGENTS.c.id == agent_id).values(changes))
        return replace(AgentView(*row), **changes)

    agent = await db.run(write, write=True)
    if agent is None:
        raise NotFound(f"agent {agent_id} does not exist")
    return agent
