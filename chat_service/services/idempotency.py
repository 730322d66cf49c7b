"""Idempotent creates: a retry with the same ``Idempotency-Key`` gets the first answer.

A key belongs to the credential that sent it, with the role and scopes it had: its
row's id is a SHA-256 of that scope and the key, so another credential's same key is
another row, and neither the key nor the caller is stored in the clear. The first
request claims the row with a token of its own; the create's own transaction marks it
committed, if the claim is still that request's (``Database`` does, while
``idempotency_claim`` names it); the answer is stored after. Answers may hold secrets
shown once (customer tokens, API keys, tickets), so they are stored compressed and
encrypted with a key derived from the Idempotency-Key, which only the client holds;
the request's fingerprint is keyed the same way.

What a retry gets:

- the first request finished with a 2xx: its answer again;
- it is still running: 409 ``idempotency-key-in-use`` (try again shortly);
- it failed without writing (4xx, 5xx): nothing was kept, so the retry runs afresh;
- it wrote and then failed, or its process died before the answer was stored: 409
  ``idempotency-answer-lost`` (at once, or once its lease is over), never a second
  write;
- it died before writing: after the lease, the retry runs afresh, and should the first
  request wake up, its write is refused (its claim is no longer its own);
- it had another body or path: 422 ``idempotency-key-reused``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import re
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from chat_service.errors import (
    IdempotencyAnswerLost,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
)
from chat_service.model import Database, utc_now
from chat_service.model.database import ClaimRef
from chat_service.model.idempotency import HELD_BY_REQUEST, IDEMPOTENCY_KEYS
from chat_service.services.access import Principal

KEY_MAX_CHARS = 255
# Visible ASCII and spaces: what a header value can carry unchanged everywhere.
_KEY = re.compile(rf"[\x20-\x7e]{{1,{KEY_MAX_CHARS}}}")
_KEYS = IDEMPOTENCY_KEYS
_NONCE_BYTES = 12
# Expired keys of every caller are deleted at most this often by each process.
_PURGE_SECONDS = 60.0

_FIND = select(
    _KEYS.c.fingerprint,
    _KEYS.c.claim_token,
    _KEYS.c.committed,
    _KEYS.c.status,
    _KEYS.c.lease_until,
    _KEYS.c.expires_at,
).where(_KEYS.c.id == bindparam("row_id"))
_ANSWER = select(_KEYS.c.response).where(_KEYS.c.id == bindparam("row_id"))
# Expired: past its time, and not held by a request still running.
_EXPIRED = and_(
    _KEYS.c.expires_at <= bindparam("now"),
    or_(_KEYS.c.status.is_not(None), _KEYS.c.lease_until <= bindparam("now")),
)
_DROP_EXPIRED = delete(_KEYS).where(_KEYS.c.id == bindparam("row_id"), _EXPIRED)
_PURGE = delete(_KEYS).where(_EXPIRED)
# Takes over a claim whose request never wrote and whose lease is over; the token
# read before must still be there, so of two takers only one wins.
_TAKE_OVER = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("row_id"),
        _KEYS.c.claim_token == bindparam("old_token"),
        _KEYS.c.committed.is_(False),
        _KEYS.c.status.is_(None),
    )
    .values(claim_token=bindparam("new_token"), lease_until=bindparam("lease_until"))
    .returning(_KEYS.c.id)
)
_FINISH = (
    update(_KEYS)
    .where(HELD_BY_REQUEST)
    .values(committed=True, status=bindparam("status"), response=bindparam("response"))
)
# A failed request leaves nothing behind, unless its write did commit: then its
# retries learn at once that the answer is lost, rather than waiting out the lease.
_RELEASE = delete(_KEYS).where(HELD_BY_REQUEST, _KEYS.c.committed.is_(False))
_GIVE_UP = update(_KEYS).where(HELD_BY_REQUEST).values(lease_until=bindparam("now"))


@dataclass(frozen=True, slots=True)
class Answer:
    """A stored answer: what a replay sends."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this request holds while it runs."""

    ref: ClaimRef  # its row's id and this request's token
    secret: bytes  # encrypts the answer


def check_key(values: list[str]) -> str:
    """The one ``Idempotency-Key`` of a request.

    Raises:
        InvalidIdempotencyKey: more than one, or one that is empty, blank, above 255
            characters, or not visible ASCII.
    """
    if len(values) != 1:
        raise InvalidIdempotencyKey("send one Idempotency-Key header, not several")
    key = values[0]
    if not _KEY.fullmatch(key) or not key.strip():
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {KEY_MAX_CHARS} visible ASCII characters"
        )
    return key


class Idempotency:
    """Claims, answers and releases of idempotency keys, in the database."""

    def __init__(self, db: Database, *, ttl_seconds: float, lease_seconds: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lease = timedelta(seconds=lease_seconds)
        self._next_purge = 0.0

    async def begin(
        self, principal: Principal, key: str, method: str, path: str, body: str
    ) -> Claim | Answer:
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
        # Keyed: the database alone does not tell whether a guessed text was sent.
        request = f"{method}\0{path}\0{body}".encode()
        fingerprint = hmac.new(secret, request, hashlib.sha256).hexdigest()
        # A retry of an answered request reads, and writes nothing.
        row = await self.db.run(
            lambda connection: connection.execute(_FIND, {"row_id": row_id}).first(),
            write=False,
        )
        for _ in range(3):
            now = utc_now()
            if row is not None and not _expired(row, now):
                return await self._settle(row, row_id, secret, fingerprint, now)
            token, row = await self._claim(principal, row_id, fingerprint)
            if token is not None:
                return Claim(ClaimRef(row_id, token), secret)
            # None and no row: released between the INSERT and the SELECT; again.
        raise IdempotencyKeyInUse(
            "a request with this Idempotency-Key is still being processed", retry_after=1
        )

    async def _settle(
        self, row: Any, row_id: str, secret: bytes, fingerprint: str, now: datetime
    ) -> Claim | Answer:
        """What ``row`` (not expired) means for this request."""
        if not hmac.compare_digest(row.fingerprint, fingerprint):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request; "
                "use a new key for a new request"
            )
        if row.status is not None:
            sealed = await self.db.run(
                lambda connection: connection.scalar(_ANSWER, {"row_id": row_id}), write=False
            )
            return _decrypt(secret, row_id, row.status, sealed)
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
        token = _new_token()
        params = {
            "row_id": row_id,
            "old_token": row.claim_token,
            "new_token": token,
            "lease_until": now + self.lease,
        }
        taken = await self.db.run(functools.partial(_take_over, params=params), write=True)
        if taken is None:
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still being processed", retry_after=1
            )
        return Claim(ClaimRef(row_id, token), secret)

    async def _claim(
        self, principal: Principal, row_id: str, fingerprint: str
    ) -> tuple[str | None, Any]:
        """Insert this request's claim: its token, or None and the row in the way."""
        now = utc_now()
        purge = time.monotonic() >= self._next_purge
        if purge:
            self._next_purge = time.monotonic() + _PURGE_SECONDS
        token = _new_token()
        values = {
            "id": row_id,
            "tenant_id": principal.tenant_id,
            "fingerprint": fingerprint,
            "claim_token": token,
            "committed": False,
            "lease_until": now + self.lease,
            "expires_at": now + self.ttl,
        }

        def claim(connection: Connection) -> tuple[str | None, Any]:
            connection.execute(_PURGE if purge else _DROP_EXPIRED, {"row_id": row_id, "now": now})
            # Of requests racing with one key, one inserts; the others wait for its
            # transaction (PostgreSQL) or the write lock (SQLite), then find its row.
            if connection.execute(_insert_new(connection, values)).first() is not None:
                return token, None
            return None, connection.execute(_FIND, {"row_id": row_id}).first()

        return await self.db.run(claim, write=True)

    async def finish(self, claim: Claim, answer: Answer) -> None:
        """Keep ``answer`` for the retries of the request that holds ``claim``.

        Raises:
            Unavailable: the database cannot be used right now.
        """
        row_id, token = claim.ref
        sealed = _encrypt(claim.secret, row_id, answer)
        params = {"row_id": row_id, "token": token, "status": answer.status, "response": sealed}
        await self.db.run(lambda connection: connection.execute(_FINISH, params), write=True)

    async def release(self, claim: Claim) -> None:
        """Let go of ``claim`` after its request failed.

        Forgotten if the request wrote nothing, so a retry runs again; if it wrote,
        kept, and retries are told at once that the answer is lost.

        Raises:
            Unavailable: the database cannot be used right now.
        """
        row_id, token = claim.ref
        params = {"row_id": row_id, "token": token, "now": utc_now()}

        def release(connection: Connection) -> None:
            if connection.execute(_RELEASE, params).rowcount == 0:
                connection.execute(_GIVE_UP, params)

        await self.db.run(release, write=True)


def _scope(principal: Principal) -> str:
    """Whose keys these are: the credential, and what it was allowed when it sent them.

    A replay skips the checks the first request passed, so it goes only to the same
    credential with the same role and scopes.
    """
    who = principal.credential or str(principal.id or principal.session_id or "")
    role = "" if principal.role is None else principal.role.value
    allowed = " ".join(sorted(principal.scopes))
    return f"{principal.kind.value}:{principal.tenant_id}:{who}:{role}:{allowed}"


def _expired(row: Any, now: datetime) -> bool:
    return bool(row.expires_at <= now and (row.status is not None or row.lease_until <= now))


def _new_token() -> str:
    return os.urandom(16).hex()


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


def _associated(row_id: str, status: int) -> bytes:
    # Bound to its row and status: a sealed answer moved to another row does not open.
    return f"{row_id}:{status}".encode()


def _encrypt(secret: bytes, row_id: str, answer: Answer) -> bytes:
    headers = json.dumps(answer.headers).encode()
    plain = zlib.compress(struct.pack(">I", len(headers)) + headers + answer.body)
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(secret).encrypt(nonce, plain, _associated(row_id, answer.status))


def _decrypt(secret: bytes, row_id: str, status: int, sealed: bytes | None) -> Answer:
    if sealed is None:
        raise ValueError("an answered idempotency key without its answer")
    nonce, box = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    plain = zlib.decompress(AESGCM(secret).decrypt(nonce, box, _associated(row_id, status)))
    (length,) = struct.unpack(">I", plain[:4])
    headers = json.loads(plain[4 : 4 + length])
    return Answer(status, dict(headers), plain[4 + length :])
