"""Telling every process that something new was committed.

A notice says "session S of tenant T has news up to seq N" (or carries an ephemeral
event, such as typing). It never carries a message: subscribers read messages from
the database by ``seq``, which stays the source of truth.
"""

from chat_service.realtime.bus import (
    Bus,
    MemoryBus,
    Notice,
    NoticeKind,
    PostgresBus,
    Publisher,
    RedisBus,
    decode_notice,
    encode_notice,
)

__all__ = [
    "Bus",
    "MemoryBus",
    "Notice",
    "NoticeKind",
    "PostgresBus",
    "Publisher",
    "RedisBus",
    "decode_notice",
    "encode_notice",
]
