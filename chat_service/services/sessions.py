"""Opening and reading chat sessions."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_service.errors import NotFound
from chat_service.model import AuthorType, ChatSession, Database, Message, cancel_safe
from chat_service.model.base import new_id, utc_now
from chat_service.services.views import SessionView


@cancel_safe
async def open_session(db: Database, *, greeting: str) -> SessionView:
    """Open a session whose first message is the support side's greeting.

    Raises:
        Unavailable: the database cannot be used right now.
    """
    now = utc_now()
    session = ChatSession(id=new_id(), created_at=now, updated_at=now, last_seq=1)
    message = Message(
        id=new_id(),
        session_id=session.id,
        seq=1,
        author_type=AuthorType.SERVICE_AGENT,
        content=greeting,
        created_at=now,
    )
    async with db.unit_of_work() as uow:
        uow.add(session)
        await uow.flush()  # the session row must exist before its message (foreign key)
        uow.add(message)
    return SessionView(session=session, messages=[message], truncated=False)


@cancel_safe
async def get_session(db: Database, *, session_id: uuid.UUID, inline_limit: int) -> SessionView:
    """A session with at most ``inline_limit`` of its most recent messages.

    Raises:
        NotFound: no such session.
        Unavailable: the database cannot be used right now.
    """
    async with db.unit_of_work(write=False) as uow:
        session = await uow.get(ChatSession, session_id)
        if session is None:
            raise NotFound(f"session {session_id} does not exist")
        return await recent_messages(uow, session, limit=inline_limit, up_to=session.last_seq)


async def recent_messages(
    uow: AsyncSession, session: ChatSession, *, limit: int, up_to: int
) -> SessionView:
    """The view of ``session`` with its last ``limit`` messages up to ``seq`` ``up_to``."""
    rows = (
        await uow.scalars(
            select(Message)
            .where(Message.session_id == session.id, Message.seq <= up_to)
            .order_by(Message.seq.desc())
            .limit(limit + 1)
        )
    ).all()
    truncated = len(rows) > limit
    messages = list(reversed(rows[:limit]))
    return SessionView(session=session, messages=messages, truncated=truncated)
