"""Posting and reading the messages of a session."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, exists, insert, select, update

from chat_service.errors import NotFound
from chat_service.model import AuthorType, Database, cancel_safe
from chat_service.model.base import new_id, utc_now
from chat_service.services.cursors import CursorCodec
from chat_service.services.sessions import (
    MESSAGE_COLUMNS,
    MESSAGES,
    SESSION_COLUMNS,
    SESSIONS,
    recent_messages,
)
from chat_service.services.views import MessagePage, MessageView, PostedMessage, SessionRow

MESSAGES_CURSOR = "messages"

# Take `count` sequence numbers of a session at once; the row lock (PostgreSQL) or the
# write lock (SQLite) holds until COMMIT, so numbers are unique and gapless.
_TAKE_SEQS = (
    update(SESSIONS)
    .where(SESSIONS.c.id == bindparam("session_id"))
    .values(
        last_seq=SESSIONS.c.last_seq + bindparam("count"),
        updated_at=bindparam("now"),
    )
    .returning(*SESSION_COLUMNS)
)


# Built once: a statement built per call costs more than running it on SQLite.
_PAGE = (
    select(*MESSAGE_COLUMNS)
    .where(MESSAGES.c.session_id == bindparam("session_id"), MESSAGES.c.seq > bindparam("after"))
    .order_by(MESSAGES.c.seq)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True, slots=True)
class _Post:
    id: uuid.UUID
    session_id: uuid.UUID
    author_type: AuthorType
    content: str
    created_at: datetime


async def post_message(
    db: Database,
    *,
    session_id: uuid.UUID,
    author_type: AuthorType,
    content: str,
    inline_limit: int | None = None,
) -> PostedMessage:
    """Append a message to a session; with ``inline_limit``, also return the session.

    The message takes the session's next sequence number inside the insert's
    transaction. Messages posted at the same time share one transaction (group
    commit); the answer comes after the COMMIT.

    Raises:
        NotFound: no such session.
        Unavailable: the database cannot be used right now.
    """
    post = _Post(new_id(), session_id, author_type, content, utc_now())
    message, session = await db.group_commit(_append_messages, post)
    if inline_limit is None:
        return PostedMessage(message=message, session=None)
    # Every lower seq was committed before this one got the lock, so reading up to
    # our seq after COMMIT gives the session exactly as it stood with our message last.
    view = await db.run(
        lambda connection: recent_messages(
            connection, session, limit=inline_limit, up_to=message.seq
        ),
        write=False,
    )
    return PostedMessage(message=message, session=view)


def _append_messages(
    connection: Connection, posts: Sequence[_Post]
) -> list[tuple[MessageView, SessionRow] | Exception]:
    """Write a batch of posts: one UPDATE per session, one INSERT for all messages."""
    counts = Counter(post.session_id for post in posts)
    now = max(post.created_at for post in posts)
    sessions: dict[uuid.UUID, SessionRow] = {}
    next_seq: dict[uuid.UUID, int] = {}
    # Sessions in a fixed order, so that two processes' batches never deadlock.
    for session_id in sorted(counts):
        row = connection.execute(
            _TAKE_SEQS, {"session_id": session_id, "count": counts[session_id], "now": now}
        ).first()
        if row is not None:
            session = SessionRow(*row)
            sessions[session_id] = session
            next_seq[session_id] = session.last_seq - counts[session_id] + 1
    results: list[tuple[MessageView, SessionRow] | Exception] = []
    rows = []
    for post in posts:
        taken = sessions.get(post.session_id)
        if taken is None:
            results.append(NotFound(f"session {post.session_id} does not exist"))
            continue
        seq = next_seq[post.session_id]
        next_seq[post.session_id] = seq + 1
        message = MessageView(
            post.id, post.session_id, seq, post.author_type, post.content, post.created_at
        )
        rows.append(message.as_row())
        results.append((message, taken))
    if rows:
        connection.execute(insert(MESSAGES), rows)
    return results


@cancel_safe
async def list_messages(
    db: Database,
    cursors: CursorCodec,
    *,
    session_id: uuid.UUID,
    limit: int,
    after: str | None = None,
) -> MessagePage:
    """A page of a session's messages in ``seq`` order, after the ``after`` cursor.

    Raises:
        InvalidCursor: ``after`` was not issued for this session's messages.
        NotFound: no such session.
        Unavailable: the database cannot be used right now.
    """
    after_seq = 0 if after is None else cursors.decode(MESSAGES_CURSOR, session_id, after)

    def read(connection: Connection) -> list[MessageView] | None:
        rows = connection.execute(
            _PAGE, {"session_id": session_id, "after": after_seq, "limit": limit + 1}
        ).all()
        # Every session holds at least its greeting, so an empty page needs a check.
        if not rows and not connection.scalar(select(exists().where(SESSIONS.c.id == session_id))):
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
async def get_message(db: Database, *, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageView:
    """One message of a session.

    Raises:
        NotFound: no such session, or no such message in it.
        Unavailable: the database cannot be used right now.
    """
    row = await db.run(
        lambda connection: connection.execute(
            select(*MESSAGE_COLUMNS).where(
                MESSAGES.c.id == message_id, MESSAGES.c.session_id == session_id
            )
        ).first(),
        write=False,
    )
    if row is None:
        raise NotFound(f"message {message_id} does not exist in session {session_id}")
    return MessageView.from_row(session_id, row)
