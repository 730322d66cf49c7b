"""Tenants, agents and API keys: what admins manage (and the CLI bootstraps)."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from chat_service.errors import Conflict, InvalidField, NotFound
from chat_service.model import Agent, ApiKey, Database, Role, Tenant, new_id, utc_now
from chat_service.services.access import ROLE_SCOPES, Principal, Scope
from chat_service.services.credentials import API_KEY_PREFIX, new_secret
from chat_service.services.cursors import CursorCodec

T = TypeVar("T")

TENANTS = cast(Table, Tenant.__table__)
AGENTS = cast(Table, Agent.__table__)
API_KEYS = cast(Table, ApiKey.__table__)
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
# How many characters of a key are kept in clear, to tell keys apart in lists.
KEY_PREFIX_CHARS = 12


@dataclass(frozen=True, slots=True)
class TenantView:
    """A tenant."""

    id: uuid.UUID
    slug: str
    name: str
    created_at: datetime


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


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    """An API key; ``key`` is set only in the answer that created it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    agent_id: uuid.UUID | None
    name: str
    prefix: str
    scopes: Sequence[str]
    created_at: datetime
    revoked_at: datetime | None
    key: str | None = None


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
_KEY_COLUMNS = (
    API_KEYS.c.id,
    API_KEYS.c.tenant_id,
    API_KEYS.c.agent_id,
    API_KEYS.c.name,
    API_KEYS.c.prefix,
    API_KEYS.c.scopes,
    API_KEYS.c.created_at,
    API_KEYS.c.revoked_at,
)


def _key_view(row: Any) -> ApiKeyView:
    values = row._asdict()
    values["scopes"] = sorted(values["scopes"].split())
    return ApiKeyView(**values)


async def create_tenant(db: Database, *, slug: str, name: str) -> TenantView:
    """A new tenant (the command line's ``create-tenant``).

    Raises:
        InvalidField: the slug is not lowercase letters, digits and dashes.
        Conflict: a tenant with this slug exists.
    """
    if not SLUG.fullmatch(slug):
        raise InvalidField("use 1-64 lowercase letters, digits and dashes", pointer="#/slug")
    with contextlib.suppress(ValueError):
        uuid.UUID(slug)
        # A JWT's tenant claim holds an id or a slug: a slug must never read as an id.
        raise InvalidField("a slug must not have the form of a tenant id", pointer="#/slug")
    if "\x00" in name or len(name) > 200:
        raise InvalidField("use at most 200 characters, without NUL", pointer="#/name")
    tenant = TenantView(new_id(), slug, name or slug, utc_now())

    def write(connection: Connection) -> None:
        connection.execute(
            insert(TENANTS).values(
                id=tenant.id, slug=tenant.slug, name=tenant.name, created_at=tenant.created_at
            )
        )

    try:
        await db.run(write, write=True)
    except IntegrityError:
        raise Conflict(f"a tenant with slug {slug!r} exists") from None
    return tenant


async def find_tenant(db: Database, slug: str) -> TenantView:
    """The tenant with ``slug``.

    Raises:
        NotFound: no such tenant.
    """
    row = await db.run(
        lambda connection: connection.execute(
            select(TENANTS.c.id, TENANTS.c.slug, TENANTS.c.name, TENANTS.c.created_at).where(
                TENANTS.c.slug == slug
            )
        ).first(),
        write=False,
    )
    if row is None:
        raise NotFound(f"no tenant with slug {slug!r}")
    return TenantView(*row)


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


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the cursor to the next one, if any."""

    items: Sequence[T]
    next_cursor: str | None


async def _page(
    db: Database,
    cursors: CursorCodec,
    principal: Principal,
    *,
    kind: str,
    table: Table,
    columns: Sequence[Any],
    limit: int,
    after: str | None,
) -> tuple[list[Any], str | None]:
    """Rows of ``table`` in the caller's tenant by id (ids are time-ordered: oldest first)."""
    conditions = [table.c.tenant_id == principal.tenant_id]
    if after is not None:
        _, last_id = cursors.decode_key(kind, principal.tenant_id, after)
        conditions.append(table.c.id > last_id)
    statement = select(*columns).where(*conditions).order_by(table.c.id).limit(limit + 1)
    rows = await db.run(lambda connection: connection.execute(statement).all(), write=False)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode_key(kind, principal.tenant_id, 0, rows[-1].id)
    return list(rows), next_cursor


async def list_agents(
    db: Database, cursors: CursorCodec, principal: Principal, *, limit: int, after: str | None
) -> Page[AgentView]:
    """A page of the caller's tenant's agents, oldest first (admins only).

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        InvalidCursor: ``after`` was not issued for this list.
    """
    principal.require(Scope.ADMIN)
    rows, next_cursor = await _page(
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
    row = await db.run(
        lambda connection: connection.execute(
            select(*_AGENT_COLUMNS).where(
                AGENTS.c.id == agent_id, AGENTS.c.tenant_id == principal.tenant_id
            )
        ).first(),
        write=False,
    )
    if row is None:
        raise NotFound(f"agent {agent_id} does not exist")
    return AgentView(*row)


async def update_agent(
    db: Database, principal: Principal, agent_id: uuid.UUID, changes: dict[str, Any]
) -> AgentView:
    """Change an agent's ``name``, ``email``, ``role`` or ``active``.

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        NotFound: no such agent in the tenant.
        Conflict: an admin tried to deactivate or demote themselves.
    """
    agent = await get_agent(db, principal, agent_id)
    if agent.id == principal.id and (
        changes.get("active") is False or changes.get("role", Role.ADMIN) is not Role.ADMIN
    ):
        raise Conflict("admins cannot deactivate or demote themselves")
    if not changes:
        return agent
    await db.run(
        lambda connection: connection.execute(
            update(AGENTS).where(AGENTS.c.id == agent_id).values(changes)
        ),
        write=True,
    )
    return replace(agent, **changes)


async def create_api_key(
    db: Database,
    principal: Principal,
    *,
    name: str,
    scopes: Sequence[Scope],
    agent_id: uuid.UUID | None,
) -> ApiKeyView:
    """A new API key of the caller's tenant, shown this once.

    With ``agent_id`` the key acts as that agent, within the agent's role.

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        InvalidField: ``agent_id`` is not an agent of the tenant.
    """
    principal.require(Scope.ADMIN)
    if agent_id is not None:
        await _tenant_agent(db, principal, agent_id)
    return await add_api_key(db, principal.tenant_id, name=name, scopes=scopes, agent_id=agent_id)


async def _tenant_agent(db: Database, principal: Principal, agent_id: uuid.UUID) -> None:
    try:
        await get_agent(db, principal, agent_id)
    except NotFound:
        raise InvalidField("not an agent of this tenant", pointer="#/agent_id") from None


async def add_api_key(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    name: str,
    scopes: Sequence[Scope],
    agent_id: uuid.UUID | None,
) -> ApiKeyView:
    """A new API key of ``tenant_id`` (no access check: the CLI's bootstrap)."""
    token, token_hash = new_secret(API_KEY_PREFIX)
    key = ApiKeyView(
        id=new_id(),
        tenant_id=tenant_id,
        agent_id=agent_id,
        name=name,
        prefix=token[:KEY_PREFIX_CHARS],
        scopes=sorted(set(scopes)),
        created_at=utc_now(),
        revoked_at=None,
        key=token,
    )

    def write(connection: Connection) -> None:
        connection.execute(
            insert(API_KEYS).values(
                id=key.id,
                tenant_id=tenant_id,
                agent_id=agent_id,
                name=name,
                prefix=key.prefix,
                key_hash=token_hash,
                scopes=" ".join(key.scopes),
                created_at=key.created_at,
                revoked_at=None,
            )
        )

    await db.run(write, write=True)
    return key


async def list_api_keys(
    db: Database, cursors: CursorCodec, principal: Principal, *, limit: int, after: str | None
) -> Page[ApiKeyView]:
    """A page of the caller's tenant's API keys, oldest first, revoked ones included.

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        InvalidCursor: ``after`` was not issued for this list.
    """
    principal.require(Scope.ADMIN)
    rows, next_cursor = await _page(
        db,
        cursors,
        principal,
        kind="api-keys",
        table=API_KEYS,
        columns=_KEY_COLUMNS,
        limit=limit,
        after=after,
    )
    return Page([_key_view(row) for row in rows], next_cursor)


async def get_api_key(db: Database, principal: Principal, key_id: uuid.UUID) -> ApiKeyView:
    """One API key of the caller's tenant (never the key itself).

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        NotFound: no such key in the tenant.
    """
    principal.require(Scope.ADMIN)
    row = await db.run(
        lambda connection: connection.execute(
            select(*_KEY_COLUMNS).where(
                API_KEYS.c.id == key_id, API_KEYS.c.tenant_id == principal.tenant_id
            )
        ).first(),
        write=False,
    )
    if row is None:
        raise NotFound(f"API key {key_id} does not exist")
    return _key_view(row)


async def revoke_api_key(db: Database, principal: Principal, key_id: uuid.UUID) -> None:
    """Revoke a key of the caller's tenant at once (again: no change).

    Raises:
        Forbidden: the credential lacks the ``admin`` scope.
        NotFound: no such key in the tenant.
    """
    principal.require(Scope.ADMIN)

    def write(connection: Connection) -> bool:
        found = connection.scalar(
            select(API_KEYS.c.id).where(
                API_KEYS.c.id == key_id, API_KEYS.c.tenant_id == principal.tenant_id
            )
        )
        if found is None:
            return False
        connection.execute(
            update(API_KEYS)
            .where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_at.is_(None))
            .values(revoked_at=utc_now())
        )
        return True

    if not await db.run(write, write=True):
        raise NotFound(f"API key {key_id} does not exist")


def role_scopes(role: Role) -> list[Scope]:
    """The scopes an agent's personal key gets."""
    return sorted(ROLE_SCOPES[role])
