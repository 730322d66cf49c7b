"""Opening and reading chat sessions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Table, bindparam, insert, select

from chat_service.errors import NotFound
from chat_service.model import AuthorType, ChatSession, Database, Message, cancel_safe
from chat_service.model.base import new_id, utc_now
from chat_service.services.views import MessageView, SessionRow, SessionView

# The hot paths use Core statements on the tables: no ORM identity map or instances.
SESSIONS = cast(Table, ChatSession.__table__)
MESSAGES = cast(Table, Message.__table__)
# The columns of a message read within a session: not session_id, which the reader
# knows (each UUID costs a conversion per row on SQLite).
MESSAGE_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.seq,
    MESSAGES.c.author_type,
    MESSAGES.c.content,
    MESSAGES.c.created_at,
)
SESSION_COLUMNS = (
    SESSIONS.c.id,
    SESSIONS.c.created_at,
    SESSIONS.c.updated_at,
    SESSIONS.c.last_seq,
)


@dataclass(frozen=True, slots=True)
class _NewSession:
    session: SessionRow
    greeting: MessageView


async def open_session(db: Database, *, greeting: str) -> SessionView:
    """Open a session whose first message is the support side's greeting.

    Sessions opened at the same time share one transaction (group commit).

    Raises:
        Unavailable: the database cannot be used right now.
    """
    now = utc_now()
    session = SessionRow(id=new_id(), created_at=now, updated_at=now, last_seq=1)
    message = MessageView(
        id=new_id(),
        session_id=session.id,
        seq=1,
        author_type=AuthorType.SERVICE_AGENT,
        content=greeting,
        created_at=now,
    )
    await db.group_commit(_insert_sessions, _NewSession(session, message))
    return SessionView(session=session, messages=[message], truncated=False)


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
            }
            for item in items
        ],
    )
    connection.execute(insert(MESSAGES), [item.greeting.as_row() for item in items])
    return [None] * len(items)


@cancel_safe
async def get_session(db: Database, *, session_id: uuid.UUID, inline_limit: int) -> SessionView:
    """A session with at most ``inline_limit`` of its most recent messages.

    Raises:
        NotFound: no such session.
        Unavailable: the database cannot be used right now.
    """

    def read(connection: Connection) -> SessionView | None:
        row = connection.execute(_SESSION, {"session_id": session_id}).first()
        if row is None:
            return None
        session = SessionRow(*row)
        return recent_messages(connection, session, limit=inline_limit, up_to=session.last_seq)

    view = await db.run(read, write=False)
    if view is None:
        raise NotFound(f"session {session_id} does not exist")
    return view


# Built once: a statement built per call costs more than running it on SQLite.
_RECENT = (
    select(*MESSAGE_COLUMNS)
    .where(MESSAGES.c.session_id == bindparam("session_id"), MESSAGES.c.seq <= bindparam("up_to"))
    .order_by(MESSAGES.c.seq.desc())
    .limit(bindparam("limit"))
)
_SESSION = select(*SESSION_COLUMNS).where(SESSIONS.c.id == bindparam("session_id"))


def recent_messages(
    connection: Connection, session: SessionRow, *, limit: int, up_to: int
) -> SessionView:
    """The view of ``session`` with its last ``limit`` messages up to ``seq`` ``up_to``."""
    rows = connection.execute(
        _RECENT, {"session_id": session.id, "up_to": up_to, "limit": limit + 1}
    ).all()
    truncated = len(rows) > limit
    messages = [MessageView.from_row(session.id, row) for row in reversed(rows[:limit])]
    return SessionView(session=session, messages=messages, truncated=truncated)
