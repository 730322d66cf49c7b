"""Opaque, signed pagination cursors.

A cursor names a position in one list (for messages: a ``seq`` in one session). It is
signed with a key so that a client can neither forge one nor reuse a cursor of one
list in another: both answer ``InvalidCursor``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import uuid

from chat_service.errors import InvalidCursor

_POSITION = struct.Struct(">Q")
_MAC_BYTES = 12


class CursorCodec:
    """Encodes and checks cursors with one secret key."""

    def __init__(self, key: bytes | str = b"") -> None:
        if isinstance(key, str):
            key = key.encode()
        # Without a configured key, cursors are valid for this process only.
        self._key = key or secrets.token_bytes(32)

    def encode(self, kind: str, scope: uuid.UUID, position: int) -> str:
        """A cursor for ``position`` in the list ``kind`` of ``scope``."""
        return self._sign(kind, scope, _POSITION.pack(position))

    def decode(self, kind: str, scope: uuid.UUID, cursor: str) -> int:
        """The position a cursor names.

        Raises:
            InvalidCursor: the cursor is malformed, forged, or from another list.
        """
        packed = self._verify(kind, scope, cursor, _POSITION.size)
        position: int = _POSITION.unpack(packed)[0]
        return position

    def encode_key(self, kind: str, scope: uuid.UUID, position: int, key: uuid.UUID) -> str:
        """A cursor for a position with a tie-breaking id (keyset pagination)."""
        return self._sign(kind, scope, _POSITION.pack(position) + key.bytes)

    def decode_key(self, kind: str, scope: uuid.UUID, cursor: str) -> tuple[int, uuid.UUID]:
        """The position and id an ``encode_key`` cursor names.

        Raises:
            InvalidCursor: the cursor is malformed, forged, or from another list.
        """
        packed = self._verify(kind, scope, cursor, _POSITION.size + 16)
        position: int = _POSITION.unpack(packed[: _POSITION.size])[0]
        return position, uuid.UUID(bytes=packed[_POSITION.size :])

    def _sign(self, kind: str, scope: uuid.UUID, packed: bytes) -> str:
        token = packed + self._mac(kind, scope, packed)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")

    def _verify(self, kind: str, scope: uuid.UUID, cursor: str, size: int) -> bytes:
        try:
            token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursor("the cursor is not one this service issued") from None
        packed, mac = token[:size], token[size:]
        if len(packed) != size or not hmac.compare_digest(mac, self._mac(kind, scope, packed)):
            raise InvalidCursor("the cursor is not one this service issued for this list")
        return packed

    def _mac(self, kind: str, scope: uuid.UUID, packed: bytes) -> bytes:
        message = kind.encode() + b"\0" + scope.bytes + packed
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]
