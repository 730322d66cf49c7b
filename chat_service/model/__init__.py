"""Persistence: SQLAlchemy models, the engine and the unit of work."""

from chat_service.model.base import SCHEMA_REVISION, Base, new_id, utc_now
from chat_service.model.chat_session import ChatSession
from chat_service.model.database import Database, cancel_safe
from chat_service.model.message import AuthorType, Message

__all__ = [
    "SCHEMA_REVISION",
    "AuthorType",
    "Base",
    "ChatSession",
    "Database",
    "Message",
    "cancel_safe",
    "new_id",
    "utc_now",
]
