"""Posting and reading the messages of a session."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, bindparam, exists, insert, select, update

from chat_service import metrics
from chat_service.errors import Conflict, Forbidden, NotFound
from chat_service.model import (
    AuthorType,
    Database,
    MessageKind,
    SessionStatus,
    Visibility,
    cancel_safe,
)
from chat_service.model.base import new_id, utc_now
from chat_service.realtime import Notice, NoticeKind, Publisher
from chat_service.services.access import Principal, Scope
from chat_service.services.cursors import CursorCodec
from chat_service.services.sessions import (
    MESSAGE_COLUMNS,
    MESSAGES,
    SESSION_COLUMNS,
    SESSIONS,
    message_in_reach,
    recent_messages,
    visible_to,
)
from chat_service.services.views import MessagePage, MessageView, PostedMessage, SessionRow

MESSAGES_CURSOR = "messages"

# Take `count` sequence numbers of a session at once; the row lock (PostgreSQL) or the
# write lock (SQLite) holds until COMMIT, so numbers are unique and gapless. A closed
# session takes no more.
_TAKE_SEQS = (
    update(SESSIONS)
    .where(
        SESSIONS.c.id == bindparam("session_id"),
        SESSIONS.c.tenant_id == bindparam("tenant"),
        SESSIONS.c.status != SessionStatus.CLOSED,
    )
    .values(
        last_seq=SESSIONS.c.last_seq + bindparam("count"),
        updated_at=bindparam("now"),
        last_activity_at=bindparam("now"),
    )
    .returning(*SESSION_COLUMNS)
)
_STATUS = select(SESSIONS.c.status).where(
    SESSIONS.c.id == bindparam("session_id"), SESSIONS.c.tenant_id == bindparam("tenant_id")
)
_REOPEN = (
    update(SESSIONS)
    .where(SESSIONS.c.id == bindparam("session_id"))
    .values(last_seq=SESSIONS.c.last_seq + 1, status=bindparam("status"))
    .returning(*SESSION_COLUMNS)
)


# Built once: a statement built per call costs more than running it on SQLite.
_PAGE_BASE = (
    select(*MESSAGE_COLUMNS)
    # The join keeps another tenant's messages out in the same round trip.
    .join(SESSIONS, SESSIONS.c.id == MESSAGES.c.session_id)
    .where(
        MESSAGES.c.session_id == bindparam("session_id"),
        SESSIONS.c.tenant_id == bindparam("tenant_id"),
        MESSAGES.c.seq > bindparam("after"),
    )
    .order_by(MESSAGES.c.seq)
    .limit(bindparam("limit"))
)
_PAGE = {customer: visible_to(_PAGE_BASE, customer=customer) for customer in (False, True)}
_EXISTS = select(
    exists().where(
        SESSIONS.c.id == bindparam("session_id"), SESSIONS.c.tenant_id == bindparam("tenant_id")
    )
)


@dataclass(frozen=True, slots=True)
class _Post:
    id: uuid.UUID
    session_id: uuid.UUID
    tenant_id: uuid.UUID
    author_type: AuthorType
    author_id: uuid.UUID | None
    visibility: Visibility
    content: str
    created_at: datetime


# Runs to the end, publishing included, even if its caller is cancelled.
@cancel_safe
async def post_message(
    db: Database,
    principal: Principal,
    *,
    publish: Publisher,
    session_id: uuid.UUID,
    content: str,
    author_type: AuthorType | None = None,
    visibility: Visibility = Visibility.PUBLIC,
    inline_limit: int | None = None,
) -> PostedMessage:
    """Append a message to a session; with ``inline_limit``, also return the session.

    The author comes from the credential: ``author_type`` may only repeat it (a
    caller without a credential, while authentication is not required, names it).
    Internal notes are for the support side only. A customer who writes into a
    resolved session reopens it, which is recorded as an event after the message.

    The message takes the session's next sequence number inside the insert's
    transaction. Messages posted at the same time share one transaction (group
    commit); the answer comes after the COMMIT, and so does the notice to ``publish``.

    Raises:
        Forbidden: the credential lacks ``sessions:write``, claims another author
            type, or a customer asked for an internal note.
        NotFound: no such session in the caller's reach.
        Conflict: the session is closed.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_WRITE)
    # The route makes a caller without a credential name the author type.
    author = principal.author_type or author_type or AuthorType.CUSTOMER
    if author_type is not None and author_type != author:
        raise Forbidden(f"this credential writes as {author}, not as {author_type}")
    if visibility is Visibility.INTERNAL and author is not AuthorType.SERVICE_AGENT:
        raise Forbidden("only the support side can write internal notes")
    post = _Post(
        new_id(),
        session_id,
        principal.tenant_id,
        author,
        principal.id,
        visibility,
        content,
        utc_now(),
    )
    message, session = await db.group_commit(_append_messages, post)
    metrics.MESSAGES_CREATED.inc()
    notices = [Notice(NoticeKind.MESSAGE, session.tenant_id, session.id, message.seq)]
    if session.last_seq > message.seq:  # a reopening event (or another post) followed
        notices.append(Notice(NoticeKind.SESSION, session.tenant_id, session.id, session.last_seq))
    publish(notices)
    if inline_limit is None or Scope.SESSIONS_READ not in principal.scopes:
        # A caller that may not read the session gets its own message alone.
        return PostedMessage(message=message, session=None)
    # Every lower seq was committed before this one got the lock, so reading up to
    # our seq after COMMIT gives the session exactly as it stood with our message last.
    view = await db.run(
        lambda connection: recent_messages(
            connection,
            session,
            limit=inline_limit,
            up_to=message.seq,
            customer=principal.is_customer,
        ),
        write=False,
    )
    return PostedMessage(message=message, session=view)


def _append_messages(
    connection: Connection, posts: Sequence[_Post]
) -> list[tuple[MessageView, SessionRow] | Exception]:
    """Write a batch of posts: one UPDATE per session, one INSERT for all messages."""
    counts = Counter((post.session_id, post.tenant_id) for post in posts)
    now = max(post.created_at for post in posts)
    sessions: dict[tuple[uuid.UUID, uuid.UUID], SessionRow | Exception] = {}
    next_seq: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
    # Sessions in a fixed order, so that two processes' batches never deadlock.
    for key in sorted(counts):
        session_id, tenant_id = key
        params = {"session_id": session_id, "tenant_id": tenant_id}
        row = connection.execute(
            _TAKE_SEQS,
            {"session_id": session_id, "tenant": tenant_id, "count": counts[key], "now": now},
        ).first()
        if row is None:
            closed = connection.scalar(_STATUS, params) is not None
            sessions[key] = (
                Conflict(f"session {session_id} is closed")
                if closed
                else NotFound(f"session {session_id} does not exist")
            )
            continue
        session = SessionRow(*row)
        sessions[key] = session
        next_seq[key] = session.last_seq - counts[key] + 1
    results: list[tuple[MessageView, SessionRow] | Exception] = []
    rows = []
    reopened: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for post in posts:
        key = (post.session_id, post.tenant_id)
        taken = sessions[key]
        if isinstance(taken, Exception):
            results.append(taken)
            continue
        seq = next_seq[key]
        next_seq[key] = seq + 1
        message = MessageView(
            post.id,
            post.session_id,
            seq,
            post.author_type,
            post.content,
            post.created_at,
            visibility=post.visibility,
            author_id=post.author_id,
        )
        rows.append(message.as_row())
        results.append((message, taken))
        if post.author_type is AuthorType.CUSTOMER and taken.status is SessionStatus.RESOLVED:
            reopened.add(key)
    for key in sorted(reopened):
        event, session = _reopen(connection, cast(SessionRow, sessions[key]), now)
        rows.append(event)
        # The answers show the session as it now stands (reopened).
        results = [
            (result[0], session)
            if not isinstance(result, Exception) and result[0].session_id == key[0]
            else result
            for result in results
        ]
    if rows:
        connection.execute(insert(MESSAGES), rows)
    return results


def _reopen(
    connection: Connection, session: SessionRow, now: datetime
) -> tuple[dict[str, Any], SessionRow]:
    """Reopen a resolved session a customer wrote into: the event's row, the session."""
    status = SessionStatus.ASSIGNED if session.assignee_id else SessionStatus.PENDING
    row = SessionRow(
        *connection.execute(_REOPEN, {"session_id": session.id, "status": status}).one()
    )
    event = status_event(
        session.id, row.last_seq, session.status, status, now, reason="customer_message"
    )
    return event.as_row(), row


def event_message(
    session_id: uuid.UUID,
    seq: int,
    now: datetime,
    *,
    text: str,
    event: dict[str, Any],
    visibility: Visibility = Visibility.PUBLIC,
    author_id: uuid.UUID | None = None,
) -> MessageView:
    """A system event in a session's history: ``text`` for people, ``event`` for code."""
    return MessageView(
        new_id(),
        session_id,
        seq,
        AuthorType.SYSTEM,
        text,
        now,
        kind=MessageKind.EVENT,
        visibility=visibility,
        author_id=author_id,
        event=event,
    )


def status_event(
    session_id: uuid.UUID,
    seq: int,
    old: SessionStatus,
    new: SessionStatus,
    now: datetime,
    *,
    reason: str | None = None,
    author_id: uuid.UUID | None = None,
) -> MessageView:
    """The event recording a status change, visible to the customer too."""
    event: dict[str, Any] = {"name": "status_changed", "from": old.value, "to": new.value}
    if reason:
        event["reason"] = reason
    text = f"Status changed from {old.value} to {new.value}."
    if reason == "customer_message":
        text = f"Reopened by the customer's message: {old.value} to {new.value}."
    return event_message(session_id, seq, now, text=text, event=event, author_id=author_id)


@cancel_safe
async def list_messages(
    db: Database,
    cursors: CursorCodec,
    principal: Principal,
    *,
    session_id: uuid.UUID,
    limit: int,
    after: str | None = None,
) -> MessagePage:
    """A page of a session's messages in ``seq`` order, after the ``after`` cursor.

    A customer does not see internal notes.

    Raises:
        Forbidden: the credential lacks the ``sessions:read`` scope.
        InvalidCursor: ``after`` was not issued for this session's messages.
        NotFound: no such session in the caller's reach.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_READ)
    after_seq = 0 if after is None else cursors.decode(MESSAGES_CURSOR, session_id, after)
    params = {"session_id": session_id, "tenant_id": principal.tenant_id}

    def read(connection: Connection) -> list[MessageView] | None:
        rows = connection.execute(
            _PAGE[principal.is_customer], {**params, "after": after_seq, "limit": limit + 1}
        ).all()
        # Every session holds at least its greeting, so an empty page needs a check.
        if not rows and not connection.scalar(_EXISTS, params):
            return None
        return [MessageView.from_row(session_id, row) for row in rows]

    rows = await db.run(read, write=False)
    if rows is None:
        raise NotFound(f"session {session_id} does not exist")
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = cursors.encode(MESSAGES_CURSOR, session_id, items[-1].seq)
    return MessagePage(items=items, next_cursor=next_cursor)


@cancel_safe
async def get_message(
    db: Database, principal: Principal, *, session_id: uuid.UUID, message_id: uuid.UUID
) -> MessageView:
    """One message of a session (never an internal note for a customer).

    Raises:
        Forbidden: the credential lacks the ``sessions:read`` scope.
        NotFound: no such session in the caller's reach, or no such message in it.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_READ)
    statement = message_in_reach(principal, session_id, message_id)
    row = await db.run(lambda connection: connection.execute(statement).first(), write=False)
    if row is None:
        raise NotFound(f"message {message_id} does not exist in session {session_id}")
    return MessageView.from_row(session_id, row)
