"""Editing and deleting messages: their authors (and, to delete, admins)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlalchemy import Connection, update

from chat_service.errors import Conflict, Forbidden, NotFound
from chat_service.model import AuthorType, Database, MessageKind, SessionStatus, cancel_safe
from chat_service.model.base import utc_now
from chat_service.realtime import Notice, NoticeKind, Publisher
from chat_service.services.access import Principal, Scope
from chat_service.services.sessions import MESSAGES, SESSIONS, message_in_reach
from chat_service.services.views import MessageView


def _is_author(principal: Principal, author_type: AuthorType, author_id: uuid.UUID | None) -> bool:
    if principal.is_customer:
        return author_type is AuthorType.CUSTOMER
    if principal.id is None:  # no credential (authentication off): what was written so
        return author_id is None and author_type is not AuthorType.SYSTEM
    return author_id == principal.id


# Runs to the end, publishing included, even if its caller is cancelled.
@cancel_safe
async def edit_message(
    db: Database,
    principal: Principal,
    *,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    content: str,
    window_seconds: float,
    publish: Publisher,
) -> MessageView:
    """Replace the text of a message; only its author, within ``window_seconds``.

    Raises:
        Forbidden: the caller is not the author, or the message is an event.
        NotFound: no such message in a session within the caller's reach.
        Conflict: the edit window has passed, the message was deleted, or the
            session is closed.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_WRITE)
    now = utc_now()

    def write(connection: Connection) -> MessageView:
        message, status = _find_for_change(connection, principal, session_id, message_id)
        if not _is_author(principal, message.author_type, message.author_id):
            raise Forbidden("only its author can edit a message")
        if message.deleted:
            raise Conflict("the message was deleted")
        if status is SessionStatus.CLOSED:
            raise Conflict(f"session {session_id} is closed")
        if (now - message.created_at).total_seconds() > window_seconds:
            raise Conflict(f"messages can be edited for {window_seconds:g} s after posting")
        connection.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id == message_id)
            .values(content=content, edited_at=now)
        )
        return replace(message, content=content, edited_at=now)

    edited = await db.run(write, write=True)
    publish([Notice(NoticeKind.UPDATED, principal.tenant_id, session_id, edited.seq)])
    return edited


# Runs to the end, publishing included, even if its caller is cancelled.
@cancel_safe
async def delete_message(
    db: Database,
    principal: Principal,
    *,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    publish: Publisher,
) -> None:
    """Delete a message's content, leaving a tombstone that keeps its ``seq``.

    Its author may delete it at any time; so may the tenant's admins. Deleting a
    deleted message changes nothing.

    Raises:
        Forbidden: the caller is neither the author nor an admin, or it is an event.
        NotFound: no such message in a session within the caller's reach.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_WRITE)

    def write(connection: Connection) -> int | None:
        message, _ = _find_for_change(connection, principal, session_id, message_id)
        admin = Scope.ADMIN in principal.scopes
        if not admin and not _is_author(principal, message.author_type, message.author_id):
            raise Forbidden("only its author or an admin can delete a message")
        if message.deleted:
            return None
        connection.execute(
            update(MESSAGES).where(MESSAGES.c.id == message_id).values(content="", deleted=True)
        )
        return message.seq

    seq = await db.run(write, write=True)
    if seq is not None:
        publish([Notice(NoticeKind.UPDATED, principal.tenant_id, session_id, seq)])


def _find_for_change(
    connection: Connection, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[MessageView, SessionStatus]:
    # Both rows locked until COMMIT (PostgreSQL; SQLite's writer holds the database):
    # an edit and a deletion, or an edit and the session's closing, take turns.
    row = connection.execute(
        message_in_reach(principal, session_id, message_id, SESSIONS.c.status).with_for_update(
            key_share=True
        )
    ).first()
    if row is None:
        raise NotFound(f"message {message_id} does not exist in session {session_id}")
    message = MessageView.from_row(session_id, row[:-1])
    if message.kind is MessageKind.EVENT:
        raise Forbidden("events cannot be changed")
    return message, row[-1]
