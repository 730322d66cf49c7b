"""Chat sessions."""

from __future__ import annotations

import dataclasses
import uuid

from quart import Blueprint, Response, request
from quart_schema import document_response, tag_blueprint

from chat_service.model import Priority, SessionStatus
from chat_service.routes.auth import authenticated
from chat_service.routes.bodies import json_body, page_limit, query_args
from chat_service.routes.idempotency import idempotent
from chat_service.routes.openapi import empty_response
from chat_service.routes.problems import InvalidInput
from chat_service.routes.responses import json_response, no_content
from chat_service.routes.state import app_state
from chat_service.services import cases, sessions
from chat_service.services import inbox as inbox_service
from chat_service.services.access import Principal
from chat_service.services.views import SessionRow
from chat_service.transport.problems import Problem
from chat_service.transport.sessions import (
    InboxPageOut,
    InboxQuery,
    NewSession,
    ReadMarker,
    SessionOut,
    SessionPatch,
)

blueprint = Blueprint("sessions", __name__)
_SESSION_FIELDS = tuple(field.name for field in dataclasses.fields(SessionRow))
tag_blueprint(blueprint, ["sessions"])


@blueprint.post("/sessions")
@authenticated
@json_body(NewSession, optional=True)
@idempotent
@document_response(SessionOut, 201)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def create_session(data: NewSession, principal: Principal) -> Response:
    """Open a chat session.

    The body is optional. The new session holds one message: the support side's
    greeting (`sessions.default_message`). The answer carries `customer_token`, shown
    this once: the customer's credential for this session alone.
    """
    state = app_state()
    view = await sessions.open_session(
        state.db,
        principal,
        publish=state.live.publish,
        greeting=state.settings.sessions.default_message,
    )
    location = f"{request.root_path}/sessions/{view.id}"  # as in messages.create_message
    return json_response(
        SessionOut.model_validate(view, from_attributes=True), 201, {"Location": location}
    )


@blueprint.get("/sessions/<uuid:session_id>")
@authenticated
@document_response(SessionOut, 200)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def session(session_id: uuid.UUID, principal: Principal) -> Response:
    """Get a session with its messages.

    Messages come oldest first. Beyond `limits.session_inline_messages` (1000 by
    default) only the most recent ones are included and `messages_truncated` is
    true: page through the rest with `GET /sessions/{session_id}/messages`.
    """
    state = app_state()
    view = await sessions.get_session(
        state.db,
        principal,
        session_id=session_id,
        inline_limit=state.settings.limits.session_inline_messages,
    )
    return json_response(SessionOut.model_validate(view, from_attributes=True))


@blueprint.patch("/sessions/<uuid:session_id>")
@authenticated
@json_body(SessionPatch)
@document_response(SessionOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 409)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def update_session(
    session_id: uuid.UUID, data: SessionPatch, principal: Principal
) -> Response:
    """Change a case's status, assignee, priority or tags.

    Support side only. Each change is recorded in the session as an `event` message
    with its own `seq` (status and assignee events are public; priority and tag
    events internal). An illegal status change, or any change to a closed session,
    answers 409. The answer is the session as after the change.
    """
    state = app_state()
    given = data.model_fields_set
    change = cases.CaseChange(
        status=None if data.status is None else SessionStatus(data.status),
        assignee_id=data.assignee_id,
        unassign="assignee_id" in given and data.assignee_id is None,
        priority=None if data.priority is None else Priority(data.priority),
        tags=data.tags,
    )
    view = await cases.update_case(
        state.db,
        principal,
        session_id=session_id,
        change=change,
        inline_limit=state.settings.limits.session_inline_messages,
        publish=state.live.publish,
    )
    return json_response(SessionOut.model_validate(view, from_attributes=True))


@blueprint.get("/sessions")
@authenticated
@query_args(InboxQuery)
@document_response(InboxPageOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def inbox(query_args: InboxQuery, principal: Principal) -> Response:
    """List the tenant's sessions: the agents' inbox.

    Support side only. Most recent activity first, filtered by `status`, `assignee`,
    `priority`, `tag` and `q` (text in the messages), with the caller's unread count
    per session. Cursor-paginated like messages.
    """
    state = app_state()
    query = query_args
    limit = page_limit(query.limit, state.settings.limits)
    filters = inbox_service.InboxFilter(
        statuses=None
        if query.status is None
        else frozenset(SessionStatus(name) for name in query.status.split(",")),
        assignee_id=_assignee(query.assignee, principal),
        unassigned=query.assignee == "none",
        priority=None if query.priority is None else Priority(query.priority),
        tag=query.tag,
        q=query.q,
    )
    page = await inbox_service.list_inbox(
        state.db, state.cursors, principal, filters=filters, limit=limit, after=query.after
    )
    # Shallow: dataclasses.asdict would deep-copy every UUID and datetime.
    items = [
        {
            **{name: getattr(item.session, name) for name in _SESSION_FIELDS},
            "tags": item.tags,
            "unread_count": item.unread_count,
        }
        for item in page.items
    ]
    return json_response(
        InboxPageOut.model_validate({"items": items, "next_cursor": page.next_cursor})
    )


def _assignee(value: str | None, principal: Principal) -> uuid.UUID | None:
    """The agent id an ``assignee`` filter names (None: no filter, or ``none``)."""
    if value is None or value == "none":
        return None
    if value == "me":
        if principal.role is None or principal.id is None:
            detail = "`me` needs an agent's credential"
            raise InvalidInput([{"detail": detail, "parameter": "assignee"}])
        return principal.id
    return uuid.UUID(value)  # InboxQuery's pattern admits only the forms of a UUID


@blueprint.post("/sessions/<uuid:session_id>/read")
@authenticated
@json_body(ReadMarker)
@empty_response(204, "Recorded.")
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def mark_read(session_id: uuid.UUID, data: ReadMarker, principal: Principal) -> Response:
    """Record how far the caller has read a session.

    Sets the caller's last read `seq` (never moving back): an agent's is where the
    inbox's unread counts start; a customer's is kept for the session. Live streams
    get a `read` event. Answers 204.
    """
    state = app_state()
    await inbox_service.mark_read(
        state.db, principal, session_id=session_id, seq=data.seq, publish=state.live.publish
    )
    return no_content()
