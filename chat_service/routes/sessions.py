"""Chat sessions."""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request
from quart_schema import document_response, tag_blueprint

from chat_service.routes.bodies import json_body
from chat_service.routes.responses import json_response
from chat_service.routes.state import app_state
from chat_service.services import sessions
from chat_service.transport.problems import Problem
from chat_service.transport.sessions import NewSession, SessionOut

blueprint = Blueprint("sessions", __name__)
tag_blueprint(blueprint, ["sessions"])


@blueprint.post("/sessions")
@json_body(NewSession, optional=True)
@document_response(SessionOut, 201)
@document_response(Problem, 400)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def create_session(data: NewSession) -> Response:
    """Open a chat session.

    The body is optional. The new session holds one message: the support side's
    greeting (`sessions.default_message`).
    """
    state = app_state()
    view = await sessions.open_session(state.db, greeting=state.settings.sessions.default_message)
    location = f"{request.root_path}/sessions/{view.id}"  # as in messages.create_message
    return json_response(
        SessionOut.model_validate(view, from_attributes=True), 201, {"Location": location}
    )


@blueprint.get("/sessions/<uuid:session_id>")
@document_response(SessionOut, 200)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def session(session_id: uuid.UUID) -> Response:
    """Get a session with its messages.

    Messages come oldest first. Beyond `limits.session_inline_messages` (1000 by
    default) only the most recent ones are included and `messages_truncated` is
    true: page through the rest with `GET /sessions/{session_id}/messages`.
    """
    state = app_state()
    view = await sessions.get_session(
        state.db,
        session_id=session_id,
        inline_limit=state.settings.limits.session_inline_messages,
    )
    return json_response(SessionOut.model_validate(view, from_attributes=True))
