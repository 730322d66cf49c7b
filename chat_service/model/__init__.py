"""Persistence: SQLAlchemy models, the engines and the transactions."""

from chat_service.model.base import (
    DEFAULT_TENANT_ID,
    DEFAULT_TENANT_SLUG,
    SCHEMA_REVISION,
    Base,
    new_id,
    utc_now,
)
from chat_service.model.chat_session import (
    ChatSession,
    Priority,
    SessionRead,
    SessionStatus,
    SessionTag,
)
from chat_service.model.database import Database, cancel_safe
from chat_service.model.idempotency import IdempotencyKey
from chat_service.model.message import AuthorType, Message, MessageKind, Visibility
from chat_service.model.people import Agent, ApiKey, LiveTicket, Role, Tenant

__all__ = [
    "DEFAULT_TENANT_ID",
    "DEFAULT_TENANT_SLUG",
    "SCHEMA_REVISION",
    "Agent",
    "ApiKey",
    "AuthorType",
    "Base",
    "ChatSession",
    "Database",
    "IdempotencyKey",
    "LiveTicket",
    "Message",
    "MessageKind",
    "Priority",
    "Role",
    "SessionRead",
    "SessionStatus",
    "SessionTag",
    "Tenant",
    "Visibility",
    "cancel_safe",
    "new_id",
    "utc_now",
]
