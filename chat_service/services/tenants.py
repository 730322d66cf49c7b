"""Tenants: the companies using the service (made by the command line)."""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.exc import IntegrityError

from chat_service.errors import Conflict, InvalidField, NotFound
from chat_service.model import Database, Tenant, new_id, utc_now

TENANTS = cast(Table, Tenant.__table__)
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class TenantView:
    """A tenant."""

    id: uuid.UUID
    slug: str
    name: str
    created_at: datetime


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
