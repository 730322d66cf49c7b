"""Idempotency keys: what a create answered, so that a retry gets the same answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import ForeignKey, LargeBinary, String, Table, and_, bindparam
from sqlalchemy.orm import Mapped, mapped_column

from chat_service.model.base import Base


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` of one credential, from first use until it expires.

    ``id`` is a SHA-256 of the credential's scope and the key, so neither is stored.
    A row is claimed (``status`` empty) by the request holding ``claim_token`` while it
    runs; the create's own transaction sets ``committed``, so a request that died after
    writing is never run again; ``status`` and ``response`` (compressed and encrypted
    with a key derived from the Idempotency-Key itself: answers may hold secrets) are
    stored after it. ``lease_until`` is when another request may take over a claim
    whose request never committed, with a new token.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64))
    claim_token: Mapped[str] = mapped_column(String(32))
    committed: Mapped[bool]
    status: Mapped[int | None]
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    lease_until: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


IDEMPOTENCY_KEYS = cast(Table, IdempotencyKey.__table__)
# The row ``row_id`` is still held by the request with ``token``, and not answered yet:
# only then may that request mark it, answer it or let it go.
HELD_BY_REQUEST = and_(
    IDEMPOTENCY_KEYS.c.id == bindparam("row_id"),
    IDEMPOTENCY_KEYS.c.claim_token == bindparam("token"),
    IDEMPOTENCY_KEYS.c.status.is_(None),
)
