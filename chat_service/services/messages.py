"""Posting and reading the messages of a session."""

from __future__ import annotations

import uuid

from sqlalchemy import exists, select, update

from chat_service.errors import NotFound
from chat_service.model import AuthorType, ChatSession, Database, Message, cancel_safe
from chat_service.model.base import new_id, utc_now
from chat_service.services.cursors import CursorCodec
from chat_service.services.sessions import recent_messages
from chat_service.services.views import MessagePage, PostedMessage

MESSAGES_CURSOR = "messages"


@cancel_safe
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
    transaction: the UPDATE of ``last_seq`` locks the session row (PostgreSQL) or the
    database (SQLite, BEGIN IMMEDIATE) until COMMIT, so numbers are unique and gapless.

    Raises:
        NotFound: no such session.
        Unavailable: the database cannot be used right now.
    """
    now = utc_now()
    async with db.unit_of_work() as uow:
        session = (
            await uow.scalars(
                update(ChatSession)
                .where(ChatSession.id == session_id)
                .values(last_seq=ChatSession.last_seq + 1, updated_at=now)
                .returning(ChatSession),
                execution_options={"synchronize_session": False},
            )
        ).one_or_none()
        if session is None:
            raise NotFound(f"session {session_id} does not exist")
        message = Message(
            id=new_id(),
            session_id=session_id,
            seq=session.last_seq,
            author_type=author_type,
            content=content,
            created_at=now,
        )
        uow.add(message)
    if inline_limit is None:
        return PostedMessage(message=message, session=None)
    # Every lower seq was committed before this one got the lock, so reading up to
    # our seq after COMMIT gives the session exactly as it stood with our message last.
    async with db.unit_of_work(write=False) as uow:
        view = await recent_messages(uow, session, limit=inline_limit, up_to=message.seq)
    return PostedMessage(message=message, session=view)


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
    async with db.unit_of_work(write=False) as uow:
        rows = (
            await uow.scalars(
                select(Message)
                .where(Message.session_id == session_id, Message.seq > after_seq)
                .order_by(Message.seq)
                .limit(limit + 1)
            )
        ).all()
        # Every session holds at least its greeting, so an empty page needs a check.
        if not rows and not await uow.scalar(select(exists().where(ChatSession.id == session_id))):
            raise NotFound(f"session {session_id} does not exist")
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = cursors.encode(MESSAGES_CURSOR, session_id, items[-1].seq)
    return MessagePage(items=items, next_cursor=next_cursor)


@cancel_safe
async def get_message(db: Database, *, session_id: uuid.UUID, message_id: uuid.UUID) -> Message:
    """One message of a session.

    Raises:
        NotFound: no such session, or no such message in it.
        Unavailable: the database cannot be used right now.
    """
    async with db.unit_of_work(write=False) as uow:
        message = await uow.scalar(
            select(Message).where(Message.id == message_id, Message.session_id == session_id)
        )
    if message is None:
        raise NotFound(f"message {message_id} does not exist in session {session_id}")
    return message
