"""API keys: credentials of machine clients (service keys) and of agents (personal keys)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update

from chat_service.errors import InvalidField, NotFound
from chat_service.model import ApiKey, Database, Role, new_id, utc_now
from chat_service.services.access import ROLE_SCOPES, Principal, Scope
from chat_service.services.agents import get_agent
from chat_service.services.credentials import API_KEY_PREFIX, new_secret
from chat_service.services.cursors import CursorCodec
from chat_service.services.paging import Page, tenant_page, tenant_row

API_KEYS = cast(Table, ApiKey.__table__)
# How many characters of a key are kept in clear, to tell keys apart in lists.
KEY_PREFIX_CHARS = 12


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
    rows, next_cursor = await tenant_page(
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
    row = await tenant_row(db, principal, table=API_KEYS, columns=_KEY_COLUMNS, row_id=key_id)
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
