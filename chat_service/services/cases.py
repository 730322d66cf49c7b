"""Sessions as support cases: status, assignee, priority and tags.

Every change is recorded in the session's history as an ``event`` message with its
own ``seq``, in the same transaction as the change. Status and assignee events are
public (the customer sees their case move); priority and tag events are internal.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, update

from chat_service.errors import Conflict, InvalidField, NotFound
from chat_service.model import (
    Agent,
    Database,
    Priority,
    SessionStatus,
    Visibility,
    cancel_safe,
)
from chat_service.model.base import utc_now
from chat_service.realtime import Notice, NoticeKind, Publisher
from chat_service.services.access import Principal, Scope
from chat_service.services.messages import event_message, status_event
from chat_service.services.sessions import (
    MESSAGES,
    SESSION_COLUMNS,
    SESSIONS,
    TAGS,
    find_session,
    recent_messages,
)
from chat_service.services.views import MessageView, SessionRow, SessionView

AGENTS = cast(Table, Agent.__table__)

# Where a case may go from each status; staying put is no change at all. A resolved
# case may be reopened (to pending or assigned); a closed one is final.
TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.OPEN: frozenset(
        {
            SessionStatus.PENDING,
            SessionStatus.ASSIGNED,
            SessionStatus.RESOLVED,
            SessionStatus.CLOSED,
        }
    ),
    SessionStatus.PENDING: frozenset(
        {SessionStatus.ASSIGNED, SessionStatus.RESOLVED, SessionStatus.CLOSED}
    ),
    SessionStatus.ASSIGNED: frozenset(
        {SessionStatus.PENDING, SessionStatus.RESOLVED, SessionStatus.CLOSED}
    ),
    SessionStatus.RESOLVED: frozenset(
        {SessionStatus.PENDING, SessionStatus.ASSIGNED, SessionStatus.CLOSED}
    ),
    SessionStatus.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class CaseChange:
    """What a ``PATCH`` asks for; ``None`` fields are left as they are.

    ``unassign`` removes the assignee.
    """

    status: SessionStatus | None = None
    assignee_id: uuid.UUID | None = None
    unassign: bool = False
    priority: Priority | None = None
    tags: Sequence[str] | None = None


# Runs to the end, publishing included, even if its caller is cancelled.
@cancel_safe
async def update_case(
    db: Database,
    principal: Principal,
    *,
    session_id: uuid.UUID,
    change: CaseChange,
    inline_limit: int,
    publish: Publisher,
) -> SessionView:
    """Apply ``change`` to a session and record each change as an event.

    Assigning an open or pending case makes it ``assigned``; unassigning an assigned
    one makes it ``pending``.

    Raises:
        Forbidden: customers cannot manage cases; the credential needs
            ``sessions:write`` and ``sessions:read`` (the answer shows the session).
        NotFound: no such session in the caller's tenant.
        InvalidField: the assignee is not an active agent of the tenant (checked
            first, whatever the session's status).
        Conflict: the session is closed, or the status change is not allowed.
        Unavailable: the database cannot be used right now.
    """
    principal.require_staff(Scope.SESSIONS_WRITE)
    # The answer is the session with its messages: only for callers that may read it.
    principal.require(Scope.SESSIONS_READ)

    def write(connection: Connection) -> tuple[SessionView, int | None] | None:
        session = find_session(connection, principal, session_id, for_update=True)
        if session is None:
            return None
        if change.assignee_id is not None and not _is_active_agent(
            connection, principal.tenant_id, change.assignee_id
        ):
            raise InvalidField("not an active agent of this tenant", pointer="#/assignee_id")
        events = _plan(connection, session, change)
        if not events:
            unchanged = recent_messages(
                connection, session, limit=inline_limit, up_to=session.last_seq, customer=False
            )
            return unchanged, None
        now = utc_now()
        values: dict[str, Any] = {
            "last_seq": session.last_seq + len(events),
            "updated_at": now,
            "last_activity_at": now,
        }
        rows = []
        for offset, (name, old, new, public) in enumerate(events, start=1):
            seq = session.last_seq + offset
            if name in _COLUMN:
                values[_COLUMN[name]] = new
            if name == "status_changed":
                message = status_event(session.id, seq, old, new, now, author_id=principal.id)
            else:
                message = _event(session.id, seq, name, old, new, now, principal, public=public)
            rows.append(message.as_row())
        updated = SessionRow(
            *connection.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id == session.id)
                .values(values)
                .returning(*SESSION_COLUMNS)
            ).one()
        )
        if change.tags is not None:
            connection.execute(delete(TAGS).where(TAGS.c.session_id == session.id))
            if change.tags:
                connection.execute(
                    insert(TAGS),
                    [{"session_id": session.id, "tag": tag} for tag in sorted(set(change.tags))],
                )
        connection.execute(insert(MESSAGES), rows)
        view = recent_messages(
            connection, updated, limit=inline_limit, up_to=updated.last_seq, customer=False
        )
        return view, session.last_seq + 1

    result = await db.run(write, write=True)
    if result is None:
        raise NotFound(f"session {session_id} does not exist")
    view, first_seq = result
    if first_seq is not None:
        # From the first event (the inbox shows each) to the last.
        tenant = view.session.tenant_id
        publish(
            [
                Notice(NoticeKind.MESSAGE, tenant, view.id, first_seq),
                Notice(NoticeKind.SESSION, tenant, view.id, view.session.last_seq),
            ]
        )
    return view


# The column each event changes (tags live in their own table).
_COLUMN = {
    "status_changed": "status",
    "assignee_changed": "assignee_id",
    "priority_changed": "priority",
}


def _plan(
    connection: Connection, session: SessionRow, change: CaseChange
) -> list[tuple[str, Any, Any, bool]]:
    """The events of ``change``: (name, old, new, public), in the order they apply."""
    if session.status is SessionStatus.CLOSED:
        raise Conflict("a closed session cannot change")
    events: list[tuple[str, Any, Any, bool]] = []
    assignee = session.assignee_id
    if change.unassign:
        assignee = None
    elif change.assignee_id is not None:
        assignee = change.assignee_id
    if assignee != session.assignee_id:
        events.append(("assignee_changed", session.assignee_id, assignee, True))
    status = change.status
    if status is None:
        if assignee is not None and session.assignee_id is None:
            if session.status in (SessionStatus.OPEN, SessionStatus.PENDING):
                status = SessionStatus.ASSIGNED
        elif assignee is None and session.status is SessionStatus.ASSIGNED:
            status = SessionStatus.PENDING
    if status is not None and status is not session.status:
        if status not in TRANSITIONS[session.status]:
            raise Conflict(f"a session cannot go from {session.status} to {status}")
        events.append(("status_changed", session.status, status, True))
    # Checked on the outcome, not only on a move: asking to stay `assigned` while
    # removing the assignee would leave an assigned case with nobody on it.
    outcome = session.status if status is None else status
    if outcome is SessionStatus.ASSIGNED and assignee is None:
        raise Conflict("an assigned session needs an assignee")
    if change.priority is not None and change.priority is not session.priority:
        events.append(("priority_changed", session.priority, change.priority, False))
    if change.tags is not None:
        current = sorted(
            connection.scalars(select(TAGS.c.tag).where(TAGS.c.session_id == session.id))
        )
        wanted = sorted(set(change.tags))
        if wanted != current:
            events.append(("tags_changed", current, wanted, False))
    return events


def _is_active_agent(connection: Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> bool:
    return bool(
        connection.scalar(
            select(AGENTS.c.active).where(AGENTS.c.id == agent_id, AGENTS.c.tenant_id == tenant_id)
        )
    )


def _event(
    session_id: uuid.UUID,
    seq: int,
    name: str,
    old: Any,
    new: Any,
    now: Any,
    principal: Principal,
    *,
    public: bool,
) -> MessageView:
    def plain(value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return str(value)
        return value.value if isinstance(value, Priority) else value

    label = name.removesuffix("_changed").replace("_", " ")
    return event_message(
        session_id,
        seq,
        now,
        text=f"{label.capitalize()} changed from {_show(plain(old))} to {_show(plain(new))}.",
        event={"name": name, "from": plain(old), "to": plain(new)},
        visibility=Visibility.PUBLIC if public else Visibility.INTERNAL,
        author_id=principal.id,
    )


def _show(value: Any) -> str:
    if value is None:
        return "nobody"
    if isinstance(value, list):
        return ", ".join(value) or "no tags"
    return str(value)
