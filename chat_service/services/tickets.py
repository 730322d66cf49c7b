"""Live tickets: a short-lived, single-use credential to put in a URL.

Browsers cannot set headers on a WebSocket (nor on an ``EventSource``), and a
long-lived token in a URL ends up in logs and histories. A client with a real
credential asks for a ticket (``POST /live/tickets``) and opens the stream with
``?ticket=...`` within seconds; using it deletes it. Tickets live in the database,
so one issued by one replica opens a stream on another.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select

from chat_service.errors import Unauthenticated
from chat_service.model import Agent, ApiKey, Database, LiveTicket, Role, utc_now
from chat_service.services.access import Kind, Principal
from chat_service.services.credentials import hash_secret, new_secret

TICKET_PREFIX = "clt_"
TICKETS = cast(Table, LiveTicket.__table__)
AGENTS = cast(Table, Agent.__table__)
API_KEYS = cast(Table, ApiKey.__table__)

_REDEEM = (
    delete(TICKETS)
    .where(TICKETS.c.ticket_hash == bindparam("hash"))
    .returning(
        TICKETS.c.tenant_id,
        TICKETS.c.kind,
        TICKETS.c.principal_id,
        TICKETS.c.role,
        TICKETS.c.session_id,
        TICKETS.c.scopes,
        TICKETS.c.expires_at,
    )
)
_EXPIRED = delete(TICKETS).where(TICKETS.c.expires_at < bindparam("now"))
_AGENT_ACTIVE = select(AGENTS.c.active).where(AGENTS.c.id == bindparam("id"))
_KEY_REVOKED = select(API_KEYS.c.revoked_at).where(API_KEYS.c.id == bindparam("id"))


async def issue_ticket(
    db: Database, principal: Principal, *, ttl_seconds: float
) -> tuple[str, datetime]:
    """A new ticket that stands for ``principal`` for ``ttl_seconds``, and its expiry.

    Raises:
        Unavailable: the database cannot be used right now.
    """
    ticket, ticket_hash = new_secret(TICKET_PREFIX)
    now = utc_now()
    expires_at = now + timedelta(seconds=ttl_seconds)
    values = {
        "ticket_hash": ticket_hash,
        "tenant_id": principal.tenant_id,
        "kind": principal.kind.value,
        "principal_id": principal.id,
        "role": None if principal.role is None else principal.role.value,
        "session_id": principal.session_id,
        "scopes": " ".join(sorted(principal.scopes)),
        "expires_at": expires_at,
    }

    def write(connection: Connection) -> None:
        # Unused tickets go as new ones come (the expiry index keeps this cheap).
        connection.execute(_EXPIRED, {"now": now})
        connection.execute(insert(TICKETS).values(values))

    await db.run(write, write=True)
    return ticket, expires_at


async def redeem_ticket(db: Database, ticket: str) -> Principal:
    """The principal a ticket stands for; the ticket is used up.

    Raises:
        Unauthenticated: unknown, used or expired ticket, or its agent was
            deactivated (or its key revoked) since.
        Unavailable: the database cannot be used right now.
    """
    if not ticket.startswith(TICKET_PREFIX):
        raise Unauthenticated("the ticket is not valid")
    ticket_hash = hash_secret(ticket)
    now = utc_now()

    def write(connection: Connection) -> Principal | None:
        row = connection.execute(_REDEEM, {"hash": ticket_hash}).first()
        if row is None or row.expires_at <= now:
            return None
        kind = Kind(row.kind)
        if kind is Kind.AGENT and not connection.scalar(_AGENT_ACTIVE, {"id": row.principal_id}):
            return None
        if kind is Kind.SERVICE and (
            connection.scalar(_KEY_REVOKED, {"id": row.principal_id}) is not None
        ):
            return None
        return Principal(
            kind=kind,
            tenant_id=row.tenant_id,
            scopes=frozenset(row.scopes.split()),
            id=row.principal_id,
            role=None if row.role is None else Role(row.role),
            session_id=row.session_id,
        )

    principal = await db.run(write, write=True)
    if principal is None:
        raise Unauthenticated("the ticket is not valid: unknown, used or expired")
    return principal
