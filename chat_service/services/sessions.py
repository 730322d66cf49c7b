"""Opening and reading chat sessions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, bindparam, func, insert, select

from chat_service.errors import NotFound
from chat_service.model import (
    AuthorType,
    ChatSession,
    Database,
    Message,
    Priority,
    SessionStatus,
    SessionTag,
    Visibility,
    cancel_safe,
)
from chat_service.model.base import new_id, utc_now
from chat_service.realtime import Notice, NoticeKind, Publisher
from chat_service.services.access import Principal, Scope
from chat_service.services.credentials import CUSTOMER_TOKEN_PREFIX, new_secret
from chat_service.services.views import MessageView, SessionRow, SessionView

# The hot paths use Core statements on the tables: no ORM identity map or instances.
SESSIONS = cast(Table, ChatSession.__table__)
MESSAGES = cast(Table, Message.__table__)
TAGS = cast(Table, SessionTag.__table__)
# The columns of a message read within a session: not session_id, which the reader
# knows (each UUID costs a conversion per row on SQLite).
MESSAGE_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.seq,
    MESSAGES.c.author_type,
    MESSAGES.c.content,
    MESSAGES.c.created_at,
    MESSAGES.c.kind,
    MESSAGES.c.visibility,
    MESSAGES.c.author_id,
    MESSAGES.c.edited_at,
    MESSAGES.c.deleted,
    MESSAGES.c.event,
)
SESSION_COLUMNS = (
    SESSIONS.c.id,
    SESSIONS.c.created_at,
    SESSIONS.c.updated_at,
    SESSIONS.c.last_seq,
    SESSIONS.c.tenant_id,
    SESSIONS.c.status,
    SESSIONS.c.assignee_id,
    SESSIONS.c.priority,
    SESSIONS.c.last_activity_at,
)


def visible_to(statement: Select[Any], *, customer: bool) -> Select[Any]:
    """``statement`` on messages, without internal notes when a customer reads."""
    if customer:
        return statement.where(MESSAGES.c.visibility == Visibility.PUBLIC)
    return statement


def message_in_reach(
    principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID, *extra: Any
) -> Select[Any]:
    """One message of a session in the caller's tenant; a customer never gets a note.

    Selects ``MESSAGE_COLUMNS``, then ``extra`` columns of its session.
    """
    return visible_to(
        select(*MESSAGE_COLUMNS, *extra)
        .join(SESSIONS, SESSIONS.c.id == MESSAGES.c.session_id)
        .where(
            MESSAGES.c.id == message_id,
            MESSAGES.c.session_id == session_id,
            SESSIONS.c.tenant_id == principal.tenant_id,
        ),
        customer=principal.is_customer,
    )


@dataclass(frozen=True, slots=True)
class _NewSession:
    session: SessionRow
    greeting: MessageView
    token_hash: str


# Runs to the end, publishing included, even if its caller is cancelled.
@cancel_safe
async def open_session(
    db: Database, principal: Principal, *, publish: Publisher, greeting: str
) -> SessionView:
    """Open a session whose first message is the support side's greeting.

    The answer carries the session's customer token, shown this once. Sessions
    opened at the same time share one transaction (group commit).

    Raises:
        Forbidden: customers cannot open sessions for others; the credential needs
            the ``sessions:write`` scope.
        Unavailable: the database cannot be used right now.
    """
    principal.require_staff(Scope.SESSIONS_WRITE)
    now = utc_now()
    session = SessionRow(
        id=new_id(),
        created_at=now,
        updated_at=now,
        last_seq=1,
        tenant_id=principal.tenant_id,
        status=SessionStatus.OPEN,
        assignee_id=None,
        priority=Priority.NORMAL,
        last_activity_at=now,
    )
    message = MessageView(
        id=new_id(),
        session_id=session.id,
        seq=1,
        author_type=AuthorType.SERVICE_AGENT,
        content=greeting,
        created_at=now,
    )
    token, token_hash = new_secret(CUSTOMER_TOKEN_PREFIX)
    await db.group_commit(_insert_sessions, _NewSession(session, message, token_hash))
    publish([Notice(NoticeKind.SESSION, session.tenant_id, session.id, session.last_seq)])
    return SessionView(
        session=session, messages=[message], truncated=False, tags=[], customer_token=token
    )


def _insert_sessions(
    connection: Connection, items: Sequence[_NewSession]
) -> list[Exception | None]:
    connection.execute(
        insert(SESSIONS),
        [
            {
                "id": item.session.id,
                "created_at": item.session.created_at,
                "updated_at": item.session.updated_at,
                "last_seq": item.session.last_seq,
                "tenant_id": item.session.tenant_id,
                "customer_token_hash": item.token_hash,
                "status": item.session.status,
                "assignee_id": None,
                "priority": item.session.priority,
                "last_activity_at": item.session.last_activity_at,
            }
            for item in items
        ],
    )
    connection.execute(insert(MESSAGES), [item.greeting.as_row() for item in items])
    return [None] * len(items)


@cancel_safe
async def get_session(
    db: Database, principal: Principal, *, session_id: uuid.UUID, inline_limit: int
) -> SessionView:
    """A session with at most ``inline_limit`` of its most recent messages.

    A customer sees their own session only, without internal notes.

    Raises:
        Forbidden: the credential lacks the ``sessions:read`` scope.
        NotFound: no such session in the caller's reach.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_READ)

    def read(connection: Connection) -> SessionView | None:
        row = connection.execute(
            _SESSION_AND_TAGS, {"session_id": session_id, "tenant_id": principal.tenant_id}
        ).first()
        if row is None:
            return None
        session = SessionRow(*row[:-1])
        return recent_messages(
            connection,
            session,
            limit=inline_limit,
            up_to=session.last_seq,
            customer=principal.is_customer,
            tags=sorted((row[-1] or "").split()),
        )

    view = await db.run(read, write=False)
    if view is None:
        raise NotFound(f"session {session_id} does not exist")
    return view


# Built once: a statement built per call costs more than running it on SQLite.
_SESSION = select(*SESSION_COLUMNS).where(
    SESSIONS.c.id == bindparam("session_id"), SESSIONS.c.tenant_id == bindparam("tenant_id")
)
_RECENT_BASE = (
    select(*MESSAGE_COLUMNS)
    .where(MESSAGES.c.session_id == bindparam("session_id"), MESSAGES.c.seq <= bindparam("up_to"))
    .order_by(MESSAGES.c.seq.desc())
    .limit(bindparam("limit"))
)
_RECENT = {customer: visible_to(_RECENT_BASE, customer=customer) for customer in (False, True)}
_TAGS = select(TAGS.c.tag).where(TAGS.c.session_id == bindparam("session_id")).order_by(TAGS.c.tag)
# The session and its tags (space-separated: a tag has no spaces) in one round trip.
_SESSION_AND_TAGS = _SESSION.add_columns(
    select(func.aggregate_strings(TAGS.c.tag, " "))
    .where(TAGS.c.session_id == SESSIONS.c.id)
    .scalar_subquery()
)


def find_session(
    connection: Connection, principal: Principal, session_id: uuid.UUID, *, for_update: bool = False
) -> SessionRow | None:
    """The session's row, if it is in the caller's tenant (locked, ``for_update``)."""
    statement = _SESSION.with_for_update(key_share=True) if for_update else _SESSION
    row = connection.execute(
        statement, {"session_id": session_id, "tenant_id": principal.tenant_id}
    ).first()
    return None if row is None else SessionRow(*row)


def recent_messages(
    connection: Connection,
    session: SessionRow,
    *,
    limit: int,
    up_to: int,
    customer: bool,
    tags: Sequence[str] | None = None,
) -> SessionView:
    """The view of ``session`` with its last ``limit`` messages up to ``seq`` ``up_to``.

    ``tags`` when the caller has read them already; else they are read here.
    """
    rows = connection.execute(
        _RECENT[customer], {"session_id": session.id, "up_to": up_to, "limit": limit + 1}
    ).all()
    truncated = len(rows) > limit
    messages = [MessageView.from_row(session.id, row) for row in reversed(rows[:limit])]
    # Tags and priority are the support side's triage: customers do not see them.
    if customer:
        tags = None
    elif tags is None:
        tags = connection.scalars(_TAGS, {"session_id": session.id}).all()
    return SessionView(session=session, messages=messages, truncated=truncated, tags=tags)
