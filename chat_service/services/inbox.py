"""The agents' inbox: the tenant's sessions by last activity, and read positions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from chat_service.errors import InvalidField, NotFound
from chat_service.model import (
    AuthorType,
    Database,
    MessageKind,
    Priority,
    SessionRead,
    SessionStatus,
    cancel_safe,
)
from chat_service.realtime import Notice, NoticeKind, Publisher
from chat_service.services.access import Principal, Scope
from chat_service.services.cursors import CursorCodec
from chat_service.services.sessions import (
    MESSAGES,
    SESSION_COLUMNS,
    SESSIONS,
    TAGS,
    find_session,
)
from chat_service.services.views import SessionRow

READS = cast(Table, SessionRead.__table__)
INBOX_CURSOR = "inbox"
# Unread messages are counted up to this many per session ("100" reads "100 or more").
UNREAD_CAP = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """Which sessions the inbox lists; ``None`` fields do not filter."""

    statuses: frozenset[SessionStatus] | None = None
    assignee_id: uuid.UUID | None = None
    unassigned: bool = False
    priority: Priority | None = None
    tag: str | None = None
    q: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A session as the inbox shows it."""

    session: SessionRow
    tags: Sequence[str]
    unread_count: int


@dataclass(frozen=True, slots=True)
class InboxPage:
    """One page of the inbox and the cursor to the next one, if any."""

    items: Sequence[InboxItem]
    next_cursor: str | None


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _unread_count() -> Any:
    """Messages after the reader's last read ``seq`` from the customer or other agents.

    Counted: customers' messages, and messages of agents and service keys other than
    the reader. Not counted: events, tombstones, the reader's own messages and
    support-side messages without an author (the greeting, and those posted without
    a credential while authentication is off). The reader is the ``reader`` parameter.
    At most ``UNREAD_CAP``.
    """
    reader = bindparam("reader", type_=READS.c.reader_id.type)
    # Correlated to the listed session explicitly: nested two levels down, it would
    # otherwise get a FROM chat_sessions of its own and read any session's position.
    last_read = (
        select(READS.c.last_read_seq)
        .where(READS.c.session_id == SESSIONS.c.id, READS.c.reader_id == reader)
        .correlate(SESSIONS)
        .scalar_subquery()
    )
    # Counted up to a cap: a session's cost stays bounded however much is unread.
    countable = (
        select(literal(1))
        .where(
            MESSAGES.c.session_id == SESSIONS.c.id,
            MESSAGES.c.seq > func.coalesce(last_read, 0),
            MESSAGES.c.kind == MessageKind.MESSAGE,
            MESSAGES.c.deleted == false(),
            or_(
                MESSAGES.c.author_type == AuthorType.CUSTOMER,
                and_(MESSAGES.c.author_id.is_not(None), MESSAGES.c.author_id != reader),
            ),
        )
        .correlate(SESSIONS)
        .limit(UNREAD_CAP)
        .subquery()
    )
    return select(func.count()).select_from(countable).scalar_subquery()


# Built once: the inbox's columns, with each session's unread count for the reader.
_INBOX_COLUMNS = (*SESSION_COLUMNS, _unread_count())


def _sessions_with_text(q: str) -> Any:
    """The ids of sessions with a message whose text holds ``q``, ignoring case.

    PostgreSQL answers from its trigram index; SQLite reads the messages.
    """
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    matches = MESSAGES.c.content.ilike(f"%{escaped}%", escape="\\")
    return select(MESSAGES.c.session_id).where(matches)


@cancel_safe
async def list_inbox(
    db: Database,
    cursors: CursorCodec,
    principal: Principal,
    *,
    filters: InboxFilter,
    limit: int,
    after: str | None = None,
) -> InboxPage:
    """A page of the tenant's sessions, most recent activity first.

    ``q`` matches the text of the sessions' messages (case-insensitive substring).

    Raises:
        Forbidden: customers have no inbox; the credential needs ``sessions:read``.
        InvalidCursor: ``after`` was not issued for this tenant's inbox.
        Unavailable: the database cannot be used right now.
    """
    principal.require_staff(Scope.SESSIONS_READ)
    conditions: list[Any] = [SESSIONS.c.tenant_id == principal.tenant_id]
    if after is not None:
        position, last_id = cursors.decode_key(INBOX_CURSOR, principal.tenant_id, after)
        moment = _EPOCH + timedelta(microseconds=position)
        conditions.append(tuple_(SESSIONS.c.last_activity_at, SESSIONS.c.id) < (moment, last_id))
    if filters.statuses:
        conditions.append(SESSIONS.c.status.in_(sorted(filters.statuses)))
    if filters.unassigned:
        conditions.append(SESSIONS.c.assignee_id.is_(None))
    elif filters.assignee_id is not None:
        conditions.append(SESSIONS.c.assignee_id == filters.assignee_id)
    if filters.priority is not None:
        conditions.append(SESSIONS.c.priority == filters.priority)
    # IN (subquery) rather than a correlated EXISTS: SQLite then finds the matching
    # rows once, instead of probing for every session in activity order.
    if filters.tag is not None:
        conditions.append(
            SESSIONS.c.id.in_(select(TAGS.c.session_id).where(TAGS.c.tag == filters.tag))
        )
    if filters.q:
        conditions.append(SESSIONS.c.id.in_(_sessions_with_text(filters.q)))
    statement = (
        select(*_INBOX_COLUMNS)
        .where(*conditions)
        .order_by(SESSIONS.c.last_activity_at.desc(), SESSIONS.c.id.desc())
        .limit(limit + 1)
    )

    def read(connection: Connection) -> list[InboxItem]:
        rows = connection.execute(statement, {"reader": principal.reader_id}).all()
        ids = [row[0] for row in rows]
        tags: dict[uuid.UUID, list[str]] = {session_id: [] for session_id in ids}
        if ids:
            for session_id, tag in connection.execute(
                select(TAGS.c.session_id, TAGS.c.tag)
                .where(TAGS.c.session_id.in_(ids))
                .order_by(TAGS.c.tag)
            ):
                tags[session_id].append(tag)
        return [InboxItem(SessionRow(*row[:-1]), tags[row[0]], int(row[-1])) for row in rows]

    # A text search reads many messages on SQLite: off the event loop, so that the
    # worker's other requests go on meanwhile.
    items = await db.run(read, write=False, long=bool(filters.q))
    page = items[:limit]
    next_cursor = None
    if len(items) > limit:
        last = page[-1].session
        next_cursor = cursors.encode_key(
            INBOX_CURSOR, principal.tenant_id, _micros(last.last_activity_at), last.id
        )
    return InboxPage(items=page, next_cursor=next_cursor)


# Runs to the end, publishing included, even if its caller is cancelled.
@cancel_safe
async def mark_read(
    db: Database, principal: Principal, *, session_id: uuid.UUID, seq: int, publish: Publisher
) -> int:
    """Record that the caller has read a session up to ``seq`` (never moves back).

    Returns the position as stored: higher than ``seq`` when an earlier read was.

    A customer records it for their own session; after the COMMIT the read is
    published to the session's live streams (and the tenant's, for agents' inboxes).

    Raises:
        Forbidden: needs ``sessions:read``.
        NotFound: no such session in the caller's tenant.
        InvalidField: ``seq`` is beyond the session's last message.
        Unavailable: the database cannot be used right now.
    """
    principal.check_session(session_id, Scope.SESSIONS_READ)
    insert = postgresql_insert if db.dialect == "postgresql" else sqlite_insert
    newest = func.greatest if db.dialect == "postgresql" else func.max

    def write(connection: Connection) -> int:
        session = find_session(connection, principal, session_id)
        if session is None:
            raise NotFound(f"session {session_id} does not exist")
        if seq > session.last_seq:
            raise InvalidField(f"the session's last seq is {session.last_seq}", pointer="#/seq")
        statement = insert(READS).values(
            session_id=session_id, reader_id=principal.reader_id, last_read_seq=seq
        )
        stored: int = connection.execute(
            statement.on_conflict_do_update(
                index_elements=[READS.c.session_id, READS.c.reader_id],
                set_={
                    "last_read_seq": newest(READS.c.last_read_seq, statement.excluded.last_read_seq)
                },
            ).returning(READS.c.last_read_seq)
        ).scalar_one()
        return stored

    # The position as stored: a read behind an earlier one leaves it where it was.
    position = await db.run(write, write=True)
    actor, actor_id = principal.actor
    publish([Notice(NoticeKind.READ, principal.tenant_id, session_id, position, actor, actor_id)])
    return position
