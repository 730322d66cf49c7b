"""The messages of a session."""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request
from quart_schema import document_headers, document_response, tag_blueprint

from chat_service.model import AuthorType, Visibility
from chat_service.routes.auth import authenticated
from chat_service.routes.bodies import json_body, page_limit, query_args
from chat_service.routes.idempotency import idempotent
from chat_service.routes.openapi import alternative_response, empty_response
from chat_service.routes.preferences import prefers_minimal
from chat_service.routes.problems import InvalidInput
from chat_service.routes.responses import json_response, no_content
from chat_service.routes.state import app_state
from chat_service.services import edits, messages
from chat_service.services.access import Principal
from chat_service.services.views import PostedMessage
from chat_service.transport.live import SendFrame
from chat_service.transport.messages import (
    MessageEdit,
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
@authenticated
@json_body(NewMessage)
@idempotent
@document_headers(PreferHeader)
@document_response(SessionOut, 201)
@alternative_response(MessageOut, 201)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 409)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def create_message(session_id: uuid.UUID, data: NewMessage, principal: Principal) -> Response:
    """Post a message to a session.

    The message gets the session's next `seq`. The author is the caller: a customer
    token writes as `customer`, agents and keys as `service_agent` (`author_type` may
    repeat it; without a credential, while authentication is not required, it is
    required). Agents may post internal notes (`visibility: internal`), which
    customers never see. A closed session answers 409; a customer writing into a
    resolved one reopens it. The answer is the whole session with the new message
    last, or, with `Prefer: return=minimal`, the new message alone. `Location` names
    the new message either way.
    """
    state = app_state()
    minimal = prefers_minimal(", ".join(request.headers.getlist("Prefer")))
    posted = await post(
        principal,
        session_id,
        data,
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


async def post(
    principal: Principal,
    session_id: uuid.UUID,
    data: NewMessage | SendFrame,
    *,
    inline_limit: int | None = None,
) -> PostedMessage:
    """Post ``data`` as ``principal`` (a REST body or a WebSocket frame alike).

    Raises:
        InvalidInput: no author type where the credential does not give one.
    """
    state = app_state()
    if principal.author_type is None and data.author_type is None:
        raise InvalidInput([{"detail": "Field required", "pointer": "#/author_type"}])
    return await messages.post_message(
        state.db,
        principal,
        publish=state.live.publish,
        session_id=session_id,
        author_type=None if data.author_type is None else AuthorType(data.author_type),
        visibility=Visibility(data.visibility),
        content=data.content,
        inline_limit=inline_limit,
    )


@blueprint.get("/sessions/<uuid:session_id>/messages")
@authenticated
@query_args(MessagePageQuery)
@document_response(MessagePageOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def messages_page(
    session_id: uuid.UUID, query_args: MessagePageQuery, principal: Principal
) -> Response:
    """List a session's messages, a page at a time.

    Ordered by `seq`. `limit` is 1 to `limits.page_size_max` (200 by default; 50 when
    not given); `after` is the `next_cursor` of the previous page.
    """
    state = app_state()
    limit = page_limit(query_args.limit, state.settings.limits)
    page = await messages.list_messages(
        state.db,
        state.cursors,
        principal,
        session_id=session_id,
        limit=limit,
        after=query_args.after,
    )
    return json_response(MessagePageOut.model_validate(page, from_attributes=True))


@blueprint.get("/sessions/<uuid:session_id>/messages/<uuid:message_id>")
@authenticated
@document_response(MessageOut, 200)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def message(session_id: uuid.UUID, message_id: uuid.UUID, principal: Principal) -> Response:
    """Get one message of a session."""
    message = await messages.get_message(
        app_state().db, principal, session_id=session_id, message_id=message_id
    )
    return json_response(MessageOut.model_validate(message, from_attributes=True))


@blueprint.patch("/sessions/<uuid:session_id>/messages/<uuid:message_id>")
@authenticated
@json_body(MessageEdit)
@document_response(MessageOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 409)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def edit_message(
    session_id: uuid.UUID, message_id: uuid.UUID, data: MessageEdit, principal: Principal
) -> Response:
    """Edit the text of a message.

    Only its author, within `sessions.edit_window_seconds` of posting (15 minutes
    by default); `edited_at` records when. Events, deleted messages and closed
    sessions answer 409 or 403.
    """
    state = app_state()
    edited = await edits.edit_message(
        state.db,
        principal,
        session_id=session_id,
        message_id=message_id,
        content=data.content,
        window_seconds=state.settings.sessions.edit_window_seconds,
        publish=state.live.publish,
    )
    return json_response(MessageOut.model_validate(edited, from_attributes=True))


@blueprint.delete("/sessions/<uuid:session_id>/messages/<uuid:message_id>")
@authenticated
@empty_response(204, "Deleted (or deleted before).")
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def delete_message(
    session_id: uuid.UUID, message_id: uuid.UUID, principal: Principal
) -> Response:
    """Delete a message, leaving a tombstone.

    Its author or an admin. The content is removed from the database; the message
    keeps its `seq` with `deleted: true`. Answers 204, again if already deleted.
    """
    state = app_state()
    await edits.delete_message(
        state.db,
        principal,
        session_id=session_id,
        message_id=message_id,
        publish=state.live.publish,
    )
    return no_content()
