"""Idempotent creates: a retry with the same ``Idempotency-Key`` gets the first answer.

A key belongs to the credential that sent it: its row's id is a SHA-256 of the
caller's scope and the key, so another caller's same key is another row, and neither
the key nor the caller is stored in the clear. The first request claims the row; the
create's own transaction marks it committed (``Database`` does, while
``idempotency_claim`` names it); the answer is stored after. Answers may hold secrets
shown once (customer tokens, API keys, tickets), so they are stored encrypted with a
key derived from the Idempotency-Key, which only the client holds.

What a retry gets:

- the first request finished with a 2xx: its answer again;
- it is still running: 409 ``idempotency-key-in-use`` (try again shortly);
- it failed (4xx, 5xx, no write): nothing was kept, so the retry runs afresh;
- it wrote, then its process died before the answer was stored: 409
  ``idempotency-answer-lost`` once the lease is over, never a second write;
- it died before writing: after the lease, the retry runs afresh;
- it had another body or path: 422 ``idempotency-key-reused``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Table, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from chat_service.errors import (
    IdempotencyAnswerLost,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
)
from chat_service.model import Database, IdempotencyKey, utc_now
from chat_service.services.access import Principal

KEY_MAX_CHARS = 255
# Visible ASCII and spaces: what a header value can carry unchanged everywhere.
_KEY = re.compile(rf"[\x20-\x7e]{{1,{KEY_MAX_CHARS}}}")
_KEYS = cast(Table, IdempotencyKey.__table__)
_NONCE_BYTES = 12
# Expired keys of every caller are deleted at most this often by each process.
_PURGE_SECONDS = 60.0

_FIND = select(
    _KEYS.c.fingerprint,
    _KEYS.c.committed,
    _KEYS.c.status,
    _KEYS.c.response,
    _KEYS.c.lease_until,
).where(_KEYS.c.id == bindparam("row_id"))
_DROP_EXPIRED = delete(_KEYS).where(
    _KEYS.c.id == bindparam("row_id"), _KEYS.c.expires_at <= bindparam("now")
)
_PURGE = delete(_KEYS).where(_KEYS.c.expires_at <= bindparam("now"))
# Takes over a claim whose request never wrote and whose lease is over; the lease
# read before must still be there, so of two takers only one wins.
_TAKE_OVER = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("row_id"),
        _KEYS.c.lease_until == bindparam("old_lease"),
        _KEYS.c.committed.is_(False),
        _KEYS.c.status.is_(None),
    )
    .values(lease_until=bindparam("lease_until"))
    .returning(_KEYS.c.id)
)
_FINISH = (
    update(_KEYS)
    .where(_KEYS.c.id == bindparam("row_id"), _KEYS.c.status.is_(None))
    .values(committed=True, status=bindparam("status"), response=bindparam("response"))
)
# A failed request leaves nothing behind, unless its write did commit.
_RELEASE = delete(_KEYS).where(
    and_(_KEYS.c.id == bindparam("row_id"), _KEYS.c.committed.is_(False), _KEYS.c.status.is_(None))
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A stored answer: what a replay sends."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this request holds while it runs: ``id`` is its row's."""

    id: str
    secret: bytes  # encrypts the answer


def check_key(key: str) -> None:
    """Check an ``Idempotency-Key`` header's value.

    Raises:
        InvalidIdempotencyKey: empty, blank, above 255 characters, or not visible ASCII.
    """
    if not _KEY.fullmatch(key) or not key.strip():
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {KEY_MAX_CHARS} visible ASCII characters"
        )


def fingerprint(method: str, path: str, body: str) -> str:
    """What makes two requests the same: method, path and (canonical) body."""
    return hashlib.sha256(f"{method}\0{path}\0{body}".encode()).hexdigest()


class Idempotency:
    """Claims, answers and releases of idempotency keys, in the database."""

    def __init__(self, db: Database, *, ttl_seconds: float, lease_seconds: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lease = timedelta(seconds=lease_seconds)
        self._next_purge = 0.0

    async def begin(self, principal: Principal, key: str, fingerprint: str) -> Claim | Answer:
        """Claim ``key`` for this request, or the answer a retry gets.

        Raises:
            IdempotencyKeyReused: the key came before with another method, path or body.
            IdempotencyKeyInUse: the first request with the key is still running.
            IdempotencyAnswerLost: the first request wrote, but its answer was not kept.
            Unavailable: the database cannot be used right now.
        """
        scope = _scope(principal).encode()
        raw = key.encode()
        row_id = hashlib.sha256(scope + b"\0" + raw).hexdigest()
        secret = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=scope, info=b"idempotency answer"
        ).derive(raw)
        now = utc_now()
        purge = time.monotonic() >= self._next_purge
        if purge:
            self._next_purge = time.monotonic() + _PURGE_SECONDS
        values = {
            "id": row_id,
            "tenant_id": principal.tenant_id,
            "fingerprint": fingerprint,
            "committed": False,
            "lease_until": now + self.lease,
            "expires_at": now + self.ttl,
        }

        def claim(connection: Connection) -> tuple[bool, Any]:
            """Whether the row was inserted; else the row found (None: gone since)."""
            connection.execute(_PURGE if purge else _DROP_EXPIRED, {"row_id": row_id, "now": now})
            # Of requests racing with one key, one inserts; the others wait for its
            # transaction (PostgreSQL) or the write lock (SQLite), then find its row.
            if connection.execute(_insert_new(connection, values)).first() is not None:
                return True, None
            return False, connection.execute(_FIND, {"row_id": row_id}).first()

        for _ in range(3):
            inserted, row = await self.db.run(claim, write=True)
            if inserted:
                return Claim(row_id, secret)
            if row is None:
                continue  # released between the INSERT and the SELECT: its request failed
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for a different request; "
                    "use a new key for a new request"
                )
            if row.status is not None:
                return _decrypt(secret, row.status, row.response)
            if row.lease_until > now:
                wait = (row.lease_until - now).total_seconds()
                raise IdempotencyKeyInUse(
                    "a request with this Idempotency-Key is still being processed",
                    retry_after=max(1, min(5, math.ceil(wait))),
                )
            if row.committed:
                raise IdempotencyAnswerLost(
                    "the request first sent with this Idempotency-Key was carried out, "
                    "but its answer was not kept; look the result up instead of retrying"
                )
            params = {
                "row_id": row_id,
                "old_lease": row.lease_until,
                "lease_until": now + self.lease,
            }
            taken = await self.db.run(functools.partial(_take_over, params=params), write=True)
            if taken is not None:
                return Claim(row_id, secret)
            now = utc_now()
        raise IdempotencyKeyInUse(
            "a request with this Idempotency-Key is still being processed", retry_after=1
        )

    async def finish(self, claim: Claim, answer: Answer) -> None:
        """Keep ``answer`` for the retries of the request that holds ``claim``.

        Raises:
            Unavailable: the database cannot be used right now.
        """
        sealed = _encrypt(claim.secret, answer)
        params = {"row_id": claim.id, "status": answer.status, "response": sealed}
        await self.db.run(lambda connection: connection.execute(_FINISH, params), write=True)

    async def release(self, claim: Claim) -> None:
        """Forget ``claim`` after its request failed, unless its write committed.

        Raises:
            Unavailable: the database cannot be used right now.
        """
        await self.db.run(
            lambda connection: connection.execute(_RELEASE, {"row_id": claim.id}), write=True
        )


def _scope(principal: Principal) -> str:
    """Whose keys these are: the credential's kind, tenant and id."""
    who: uuid.UUID | None = principal.id or principal.session_id
    return f"{principal.kind.value}:{principal.tenant_id}:{who or ''}"


def _take_over(connection: Connection, params: dict[str, Any]) -> Any:
    return connection.execute(_TAKE_OVER, params).first()


def _insert_new(connection: Connection, values: Mapping[str, Any]) -> Any:
    """INSERT the row unless the id is taken, returning its id when it was inserted."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(_KEYS)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[_KEYS.c.id])
        .returning(_KEYS.c.id)
    )


def _encrypt(secret: bytes, answer: Answer) -> bytes:
    # Latin-1 maps bytes to characters one to one: any body survives the round trip.
    document = {"headers": answer.headers, "body": answer.body.decode("latin-1")}
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps(document).encode()
    return nonce + AESGCM(secret).encrypt(nonce, plain, None)


def _decrypt(secret: bytes, status: int, sealed: bytes | None) -> Answer:
    if sealed is None:
        raise ValueError("an answered idempotency key without its answer")
    plain = AESGCM(secret).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
    document = json.loads(plain)
    body = cast(str, document["body"]).encode("latin-1")
    return Answer(status, dict(document["headers"]), body)
