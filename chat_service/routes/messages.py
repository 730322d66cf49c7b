"""The messages of a session."""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request
from quart_schema import document_headers, document_response, tag_blueprint

from chat_service.model import AuthorType
from chat_service.routes.bodies import json_body, query_args
from chat_service.routes.openapi import alternative_response
from chat_service.routes.preferences import prefers_minimal
from chat_service.routes.problems import InvalidInput
from chat_service.routes.responses import json_response
from chat_service.routes.state import app_state
from chat_service.services import messages
from chat_service.transport.messages import (
    MessageOut,
    MessagePageOut,
    MessagePageQuery,
    NewMessage,
    PreferHeader,
)
from chat_service.transport.problems import Problem
from chat_service.transport.sessions import SessionOut

blueprint = Blueprint("messages", __name__)
tag_blueprint(blueprint, ["messages"])


@blueprint.post("/sessions/<uuid:session_id>/messages")
@json_body(NewMessage)
@document_headers(PreferHeader)
@document_response(SessionOut, 201)
@alternative_response(MessageOut, 201)
@document_response(Problem, 400)
@document_response(Problem, 404)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def create_message(session_id: uuid.UUID, data: NewMessage) -> Response:
    """Post a message to a session.

    The message gets the session's next `seq`. The answer is the whole session with
    the new message last, or, with `Prefer: return=minimal`, the new message alone.
    `Location` names the new message either way.
    """
    state = app_state()
    minimal = prefers_minimal(", ".join(request.headers.getlist("Prefer")))
    posted = await messages.post_message(
        state.db,
        session_id=session_id,
        author_type=AuthorType(data.author_type),
        content=data.content,
        inline_limit=None if minimal else state.settings.limits.session_inline_messages,
    )
    headers = {
        "Vary": "Prefer",
        # Formatted rather than url_for(): building through the URL map costs more
        # than the rest of this handler's own work; test_contract checks the path.
        "Location": f"{request.root_path}/sessions/{session_id}/messages/{posted.message.id}",
    }
    if posted.session is None:
        headers["Preference-Applied"] = "return=minimal"
        return json_response(
            MessageOut.model_validate(posted.message, from_attributes=True), 201, headers
        )
    return json_response(
        SessionOut.model_validate(posted.session, from_attributes=True), 201, headers
    )


@blueprint.get("/sessions/<uuid:session_id>/messages")
@query_args(MessagePageQuery)
@document_response(MessagePageOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 404)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def messages_page(session_id: uuid.UUID, query_args: MessagePageQuery) -> Response:
    """List a session's messages, a page at a time.

    Ordered by `seq`. `limit` is 1 to `limits.page_size_max` (200 by default; 50 when
    not given); `after` is the `next_cursor` of the previous page.
    """
    state = app_state()
    limits = state.settings.limits
    limit = limits.page_size_default if query_args.limit is None else query_args.limit
    if not 1 <= limit <= limits.page_size_max:
        detail = f"must be between 1 and {limits.page_size_max}"
        raise InvalidInput([{"detail": detail, "parameter": "limit"}])
    page = await messages.list_messages(
        state.db, state.cursors, session_id=session_id, limit=limit, after=query_args.after
    )
    return json_response(MessagePageOut.model_validate(page, from_attributes=True))


@blueprint.get("/sessions/<uuid:session_id>/messages/<uuid:message_id>")
@document_response(MessageOut, 200)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def message(session_id: uuid.UUID, message_id: uuid.UUID) -> Response:
    """Get one message of a session."""
    message = await messages.get_message(
        app_state().db, session_id=session_id, message_id=message_id
    )
    return json_response(MessageOut.model_validate(message, from_attributes=True))
