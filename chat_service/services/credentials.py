"""Turning a presented secret into a ``Principal``.

Customer tokens and API keys are random secrets shown once; only their SHA-256 hash
is stored, so a stolen database does not hold a usable credential. (They are long
random values, so a fast hash is enough: there is nothing to guess.)
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from chat_service.errors import Unauthenticated
from chat_service.model import Agent, ApiKey, ChatSession, Database, Role, Tenant, new_id, utc_now
from chat_service.services.access import ROLE_SCOPES, Kind, Principal, customer
from chat_service.services.jwt_tokens import JwtIdentity

CUSTOMER_TOKEN_PREFIX = "cst_"  # noqa: S105 - a prefix, not a secret
API_KEY_PREFIX = "csk_"
MAX_CLAIM_CHARS = 255
SESSIONS = cast(Table, ChatSession.__table__)
API_KEYS = cast(Table, ApiKey.__table__)
AGENTS = cast(Table, Agent.__table__)
TENANTS = cast(Table, Tenant.__table__)

_CUSTOMER = select(SESSIONS.c.id, SESSIONS.c.tenant_id).where(
    SESSIONS.c.customer_token_hash == bindparam("hash")
)
_KEY = (
    select(
        API_KEYS.c.id,
        API_KEYS.c.tenant_id,
        API_KEYS.c.agent_id,
        API_KEYS.c.scopes,
        API_KEYS.c.revoked_at,
        AGENTS.c.role,
        AGENTS.c.active,
    )
    .select_from(API_KEYS.outerjoin(AGENTS, AGENTS.c.id == API_KEYS.c.agent_id))
    .where(API_KEYS.c.key_hash == bindparam("hash"))
)


def new_secret(prefix: str) -> tuple[str, str]:
    """A new secret with ``prefix``, and the hash that is stored instead of it."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_secret(token)


def hash_secret(token: str) -> str:
    """The stored form of a customer token or API key."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def from_bearer(db: Database, token: str) -> Principal:
    """The principal of a customer token or an API key.

    Raises:
        Unauthenticated: the token is unknown, revoked, or its agent is deactivated.
        Unavailable: the database cannot be used right now.
    """
    hashed = hash_secret(token)
    if token.startswith(CUSTOMER_TOKEN_PREFIX):
        row = await db.run(
            lambda connection: connection.execute(_CUSTOMER, {"hash": hashed}).first(),
            write=False,
        )
        if row is None:
            raise Unauthenticated("the customer token is not valid")
        return customer(tenant_id=row.tenant_id, session_id=row.id)
    if token.startswith(API_KEY_PREFIX):
        key = await db.run(
            lambda connection: connection.execute(_KEY, {"hash": hashed}).first(), write=False
        )
        if key is None or key.revoked_at is not None:
            raise Unauthenticated("the API key is not valid or has been revoked")
        scopes = frozenset(key.scopes.split())
        if key.agent_id is None:
            return Principal(
                kind=Kind.SERVICE,
                tenant_id=key.tenant_id,
                scopes=scopes,
                id=key.id,
                credential=f"key:{key.id}",
            )
        if not key.active:
            raise Unauthenticated("the agent of this API key is deactivated")
        role = Role(key.role)
        return Principal(
            kind=Kind.AGENT,
            tenant_id=key.tenant_id,
            scopes=scopes & ROLE_SCOPES[role],
            id=key.agent_id,
            role=role,
            credential=f"key:{key.id}",
        )
    raise Unauthenticated("the bearer token is not a token this service issued")


async def from_jwt(db: Database, identity: JwtIdentity) -> Principal:
    """The agent a verified identity-provider token names, made on first sight.

    The tenant claim holds the tenant's id or slug; the role claim ``agent`` or
    ``admin``. The agent's role follows the token's.

    Raises:
        Unauthenticated: unknown tenant, a role other than agent or admin, or a
            deactivated agent.
        Unavailable: the database cannot be used right now.
    """
    try:
        role = Role(identity.role)
    except ValueError:
        raise Unauthenticated("the token's role is neither agent nor admin") from None
    for name, value in (("subject", identity.subject), ("tenant", identity.tenant)):
        # What the columns can hold on both databases (VARCHAR(255), no NUL).
        if len(value) > MAX_CLAIM_CHARS or "\x00" in value:
            raise Unauthenticated(f"the token's {name} claim is not usable here")

    def find(connection: Connection) -> tuple[uuid.UUID | None, Any]:
        tenant_id = connection.scalar(
            select(TENANTS.c.id).where(or_(*_tenant_matches(identity.tenant)))
        )
        if tenant_id is None:
            return None, None
        agent = connection.execute(
            select(AGENTS.c.id, AGENTS.c.role, AGENTS.c.active).where(
                AGENTS.c.tenant_id == tenant_id, AGENTS.c.external_subject == identity.subject
            )
        ).first()
        return tenant_id, agent

    def provision(connection: Connection) -> None:
        # ON CONFLICT keeps two first requests of one agent from failing each other.
        values = {
            "id": new_id(),
            "tenant_id": tenant_id,
            "role": role,
            "name": identity.subject[:200],
            "external_subject": identity.subject,
            "active": True,
            "created_at": utc_now(),
        }
        dialect_insert = postgresql_insert if db.dialect == "postgresql" else sqlite_insert
        connection.execute(
            dialect_insert(AGENTS)
            .values(values)
            .on_conflict_do_update(
                index_elements=[AGENTS.c.tenant_id, AGENTS.c.external_subject],
                set_={"role": role},
            )
        )

    tenant_id, agent = await db.run(find, write=False)
    if tenant_id is None:
        raise Unauthenticated("the token's tenant is not known here")
    if agent is not None and not agent.active:
        # Before any change: a refused token changes nothing, its role claim included.
        raise Unauthenticated("this agent is deactivated")
    if agent is None or agent.role != role:
        await db.run(provision, write=True)
        _, agent = await db.run(find, write=False)
    if not agent.active:  # deactivated in between
        raise Unauthenticated("this agent is deactivated")
    agent_id = agent.id
    return Principal(
        kind=Kind.AGENT,
        tenant_id=tenant_id,
        scopes=ROLE_SCOPES[role],
        id=agent_id,
        role=role,
        credential=f"jwt:{identity.subject}",
    )


def _tenant_matches(tenant: str) -> list[Any]:
    conditions: list[Any] = [TENANTS.c.slug == tenant]
    with contextlib.suppress(ValueError):
        conditions.append(TENANTS.c.id == uuid.UUID(tenant))
    return conditions
