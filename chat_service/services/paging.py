"""A tenant's rows: one by id, or a page at a time by their time-ordered ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Table, select

from chat_service.model import Database
from chat_service.services.access import Principal
from chat_service.services.cursors import CursorCodec

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the cursor to the next one, if any."""

    items: Sequence[T]
    next_cursor: str | None


async def tenant_page(
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


async def tenant_row(
    db: Database, principal: Principal, *, table: Table, columns: Sequence[Any], row_id: Any
) -> Any:
    """The row of ``table`` with ``row_id`` in the caller's tenant, or None."""
    statement = select(*columns).where(
        table.c.id == row_id, table.c.tenant_id == principal.tenant_id
    )
    return await db.run(lambda connection: connection.execute(statement).first(), write=False)
