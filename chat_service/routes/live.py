"""Live delivery over Server-Sent Events and WebSocket, and live tickets.

Both transports carry the same events: ``event`` (its kind), ``id`` (what to resume
from: a ``seq`` on a session's stream) and ``data`` (JSON). An SSE stream sends them
as SSE fields; a WebSocket sends each as one JSON text frame ``{"event", "id",
"data"}``. A WebSocket is refused by closing it with ``4000 + the HTTP status`` the
same request would get (4401, 4403, 4404, 4422), 1013 when the database is
unavailable; a stream the server ends closes with 1013 (the client fell behind: it
resumes from its last ``id``) or 1001 (the server is shutting down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import ValidationError
from quart import Blueprint, Response, request, websocket
from quart.wrappers import Websocket
from quart_schema import document_response, security_scheme, tag_blueprint
from quart_schema.validation import QuerystringValidationError
from werkzeug.datastructures import Headers

from chat_service import metrics
from chat_service.errors import DomainError, InvalidField, Unauthenticated, Unavailable
from chat_service.routes import live_sinks, rate_limits
from chat_service.routes import messages as messages_routes
from chat_service.routes.auth import (
    SECURITY_SCHEME,
    TICKET_SCHEME,
    authenticated,
    count_failure,
    principal_from,
)
from chat_service.routes.bodies import parse_query, query_args
from chat_service.routes.idempotency import idempotent
from chat_service.routes.openapi import empty_response, event_stream_response
from chat_service.routes.problems import InvalidInput, problem_for
from chat_service.routes.responses import json_response, no_content
from chat_service.routes.state import app_state
from chat_service.services import inbox, tickets
from chat_service.services.access import Principal
from chat_service.services.live import (
    Activity,
    CloseReason,
    LiveEvent,
    SessionState,
    Sink,
    StreamClosed,
)
from chat_service.services.rate_limits import RouteClass
from chat_service.services.views import MessageView
from chat_service.transport.live import (
    ActivityOut,
    LiveSessionOut,
    ReadFrame,
    SendFrame,
    SessionStreamQuery,
    TenantStreamQuery,
    TicketOut,
    TypingFrame,
)
from chat_service.transport.messages import MessageOut
from chat_service.transport.problems import Problem

log = logging.getLogger(__name__)

blueprint = Blueprint("live", __name__)
tag_blueprint(blueprint, ["live"])

EVENT_STREAM = "text/event-stream"
LAST_EVENT_ID = "Last-Event-ID"
# How long an SSE client waits before reconnecting (its EventSource's `retry`).
RETRY_MILLISECONDS = 2000
HEARTBEAT_FRAME = '{"event":"heartbeat","id":null,"data":{}}'
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013
_CLOSE_FOR = {
    CloseReason.SHUTDOWN: (CLOSE_GOING_AWAY, "the server is shutting down: reconnect"),
    CloseReason.OVERFLOW: (CLOSE_TRY_AGAIN_LATER, "too slow: resume after the last id"),
}
_FRAMES: dict[object, type[SendFrame | TypingFrame | ReadFrame]] = {
    "message": SendFrame,
    "typing": TypingFrame,
    "read": ReadFrame,
}
Stream = AsyncIterator[list[LiveEvent] | None]


# -- tickets -------------------------------------------------------------------------


@blueprint.post("/live/tickets")
@authenticated
@idempotent
@document_response(TicketOut, 201)
@document_response(Problem, 401)
@document_response(Problem, 503)
async def create_ticket(principal: Principal) -> Response:
    """Get a single-use ticket for a live stream.

    For browsers, which cannot send `Authorization` on a WebSocket or an
    `EventSource`: pass it as `?ticket=` within `live.ticket_seconds` (30 s). It
    stands for the credential that asked for it, and works once.
    """
    state = app_state()
    ticket, expires_at = await tickets.issue_ticket(
        state.db, principal, ttl_seconds=state.settings.live.ticket_seconds
    )
    body = TicketOut(ticket=ticket, expires_at=expires_at)
    return json_response(body, 201, {"Cache-Control": "no-store"})


async def live_principal(
    ticket: str | None, authorization: str | None, *, ws: bool = False
) -> Principal:
    """The caller of a live stream: by ticket, else by its ``Authorization`` header.

    A refused one counts against the client's address, as in ``authenticated``.

    Raises:
        Unauthenticated: a bad ticket, or as ``current_principal``.
        RateLimited: refused credentials from this address are above its limits.
    """
    try:
        if ticket is not None:
            return await tickets.redeem_ticket(app_state().db, ticket)
        return await principal_from(authorization)
    except Unauthenticated:
        await count_failure(RouteClass.READS, ws=ws)
        raise


# -- Server-Sent Events ------------------------------------------------------------------


@blueprint.get("/sessions/<uuid:session_id>/events")
@security_scheme([{SECURITY_SCHEME: []}, {TICKET_SCHEME: []}])
@query_args(SessionStreamQuery)
@event_stream_response(
    ["message", "message.updated", "typing", "read", "close"], "The session's events."
)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 422)
@document_response(Problem, 429)
@document_response(Problem, 503)
async def session_events(session_id: uuid.UUID, query_args: SessionStreamQuery) -> Response:
    """Follow a session's events (Server-Sent Events).

    A `text/event-stream` of `message` events (the message as in the REST API; `id`
    is its `seq`), `message.updated` (an edit or deletion), `typing` and `read`.
    Customers never get internal notes. Resume with `Last-Event-ID` (an
    `EventSource` sends it by itself) or `?after=<seq>`: everything after that `seq`
    is replayed from the database, then the stream goes live, with no gap and no
    repeat. An idle stream gets a `: keep-alive` comment at least every
    `live.heartbeat_seconds`. The server may end the stream with a `close` event
    (`reason`: `overflow` or `shutdown`); reconnect and resume.
    """
    state = app_state()
    resumed = _last_event_id()
    after = query_args.after if resumed is None else resumed
    principal = await live_principal(query_args.ticket, request.headers.get("Authorization"))
    await rate_limits.limit(principal, RouteClass.READS)
    sink = _event_stream_sink()
    stream = state.live.session_events(principal, session_id, after=after, sink=sink)
    try:
        return await _event_stream(stream)
    except InvalidField as error:
        if resumed is None:
            raise
        raise InvalidField(error.detail, parameter=LAST_EVENT_ID) from None


@blueprint.get("/events")
@security_scheme([{SECURITY_SCHEME: []}, {TICKET_SCHEME: []}])
@query_args(TenantStreamQuery)
@event_stream_response(["session", "message", "read", "resync", "close"], "The inbox's events.")
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 422)
@document_response(Problem, 429)
@document_response(Problem, 503)
async def tenant_events(query_args: TenantStreamQuery) -> Response:
    """Follow the tenant's inbox (Server-Sent Events; support side only).

    `session` events carry a session's state as the inbox shows it (opened, a new
    message, status, assignee, priority or tag changes) with an `id` to resume
    from; `message` events the new messages and events, internal notes included;
    `read` events the reads. With `Last-Event-ID` or `?after=`, the sessions changed
    since then come first; a `resync` event means too much changed: reload the
    inbox from `GET /sessions`.
    """
    state = app_state()
    after = _last_event_id()
    after = query_args.after if after is None else after
    principal = await live_principal(query_args.ticket, request.headers.get("Authorization"))
    await rate_limits.limit(principal, RouteClass.READS)
    sink = _event_stream_sink()
    stream = state.live.tenant_events(principal, after=after, sink=sink)
    return await _event_stream(stream)


def _event_stream_sink() -> Sink | None:
    if not app_state().settings.live.direct_writes:
        return None
    return live_sinks.event_stream_sink(sse_chunk)


def _websocket_sink() -> Sink | None:
    _settle_compression()  # first: it decides how the sink writes
    if not app_state().settings.live.direct_writes:
        return None
    return live_sinks.websocket_sink(ws_frames, ws_frame)


def _settle_compression() -> None:
    """Decline per-message deflate before accepting, unless the settings allow it."""
    if not app_state().settings.live.websocket_compression:
        live_sinks.decline_compression()


def _last_event_id() -> int | None:
    value = request.headers.get(LAST_EVENT_ID)
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        detail = "must be the id of an event of this stream"
        raise InvalidInput([{"detail": detail, "parameter": LAST_EVENT_ID}])
    return int(value)


async def _event_stream(stream: Stream) -> Response:
    try:
        await anext(stream)  # the caller's access is checked: the stream may start
    except BaseException:
        await _close(stream)
        raise

    async def body() -> AsyncIterator[bytes]:
        connections = metrics.LIVE_CONNECTIONS.labels(transport="sse")
        connections.inc()
        try:
            yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
            async for batch in stream:
                # What is ready at once goes in one write.
                yield b": keep-alive\n\n" if batch is None else b"".join(map(sse_frame, batch))
        except StreamClosed as closed:
            yield _sse_notice("close", {"reason": closed.reason.value})
        except Unavailable:
            yield _sse_notice("close", {"reason": "unavailable"})
        finally:
            connections.dec()
            await _close(stream)

    response = Response(
        body(),
        mimetype=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # a stream lasts as long as the client stays
    return response


async def _close(stream: Stream) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def sse_frame(event: LiveEvent) -> bytes:
    """The event as an SSE message (encoded once, whoever receives it)."""
    frame: bytes | None = event.cache.get("sse")
    if frame is None:
        head = "" if event.position is None else f"id: {event.position}\n"
        frame = f"{head}event: {event.kind.value}\ndata: {event_data(event)}\n\n".encode()
        event.cache["sse"] = frame
    return frame


def sse_chunk(events: Sequence[LiveEvent]) -> bytes:
    """The events as one chunk of a chunked response, encoded once per hand-out."""
    return _encoded_once(events, "sse-chunk", _sse_chunk)


def _sse_chunk(events: Sequence[LiveEvent]) -> bytes:
    return live_sinks.http_chunk(b"".join(map(sse_frame, events)))


def ws_frames(events: Sequence[LiveEvent]) -> bytes:
    """The events as WebSocket text frames on the wire, encoded once per hand-out."""
    return _encoded_once(events, "ws-wire", _ws_frames)


def _ws_frames(events: Sequence[LiveEvent]) -> bytes:
    return b"".join(live_sinks.websocket_text_frame(ws_frame(e).encode()) for e in events)


def _encoded_once(
    events: Sequence[LiveEvent], kind: str, encode: Callable[[Sequence[LiveEvent]], bytes]
) -> bytes:
    # Kept by the first event, under the identities of them all: subscribers that get
    # the same events (all of a hand-out, or all but the internal notes) share it. The
    # events are alive as long as the hand-out, the only time a sink writes them.
    key = kind if len(events) == 1 else (kind, *map(id, events))
    cache = events[0].cache
    encoded: bytes | None = cache.get(key)
    if encoded is None:
        encoded = cache[key] = encode(events)
    return encoded


def ws_frame(event: LiveEvent) -> str:
    """The event as a WebSocket text frame (encoded once, whoever receives it)."""
    frame: str | None = event.cache.get("ws")
    if frame is None:
        position = "null" if event.position is None else str(event.position)
        frame = f'{{"event":"{event.kind.value}","id":{position},"data":{event_data(event)}}}'
        event.cache["ws"] = frame
    return frame


def event_data(event: LiveEvent) -> str:
    """The event's ``data``: JSON text on one line."""
    data: str | None = event.cache.get("data")
    if data is not None:
        return data
    payload = event.payload
    if isinstance(payload, MessageView):
        data = MessageOut.model_validate(payload, from_attributes=True).model_dump_json()
    elif isinstance(payload, Activity):
        data = ActivityOut.model_validate(payload, from_attributes=True).model_dump_json()
    elif isinstance(payload, SessionState):
        row = payload.session
        data = LiveSessionOut(
            id=row.id,
            status=row.status.value,
            assignee_id=row.assignee_id,
            priority=row.priority.value,
            tags=list(payload.tags),
            last_seq=row.last_seq,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_activity_at=row.last_activity_at,
        ).model_dump_json()
    else:
        data = "{}"
    event.cache["data"] = data
    return data


def _sse_notice(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {_json(data)}\n\n".encode()


# -- WebSocket -------------------------------------------------------------------------


@blueprint.websocket("/sessions/<uuid:session_id>/live")
async def session_live(session_id: uuid.UUID) -> None:
    """A session's events, and the client's messages, typing and reads (WebSocket)."""
    state = app_state()
    try:
        query = parse_query(SessionStreamQuery, websocket.args)
        principal = await live_principal(
            query.ticket, websocket.headers.get("Authorization"), ws=True
        )
        await rate_limits.limit(principal, RouteClass.READS, ws=True)
        sink = _websocket_sink()
        stream = state.live.session_events(principal, session_id, after=query.after, sink=sink)
    except Exception as error:
        await _refuse(error)
        return
    await _serve_websocket(stream, _receive_actions(principal, session_id))


@blueprint.websocket("/live")
async def tenant_live() -> None:
    """The tenant's inbox events (WebSocket; support side only)."""
    state = app_state()
    try:
        query = parse_query(TenantStreamQuery, websocket.args)
        principal = await live_principal(
            query.ticket, websocket.headers.get("Authorization"), ws=True
        )
        await rate_limits.limit(principal, RouteClass.READS, ws=True)
        sink = _websocket_sink()
        stream = state.live.tenant_events(principal, after=query.after, sink=sink)
    except Exception as error:
        await _refuse(error)
        return
    await _serve_websocket(stream, _receive_nothing())


async def _refuse(error: Exception) -> None:
    if isinstance(error, QuerystringValidationError):
        code, reason = 4422, "invalid query parameters"
    elif isinstance(error, Unavailable):
        code, reason = CLOSE_TRY_AGAIN_LATER, "the database is unavailable: try again"
    elif (document := problem_for(error)) is not None:
        code, reason = 4000 + int(document["status"]), str(document["detail"])
        if isinstance(error, InvalidField):
            where = error.parameter or error.pointer
            reason = f"{where}: {error.detail}"
    else:
        raise error
    _settle_compression()
    await websocket.accept()
    await websocket.close(code, _close_reason(reason))


def _close_reason(text: str) -> str:
    # A close frame's reason holds at most 123 bytes of UTF-8.
    encoded = text.encode()[:123]
    return encoded.decode(errors="ignore")


async def _serve_websocket(stream: Stream, receiver: AsyncIterator[str]) -> None:
    try:
        await anext(stream)  # the caller's access is checked
    except Exception as error:
        await _close(stream)
        await _refuse(error)
        return
    await websocket.accept()
    connections = metrics.LIVE_CONNECTIONS.labels(transport="websocket")
    connections.inc()
    sending = asyncio.ensure_future(_send_events(stream))
    receiving = asyncio.ensure_future(_drain(receiver))
    try:
        done, _ = await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
        if sending in done:
            code, reason = _closing(sending)
            await websocket.close(code, reason)
    finally:
        for task in (sending, receiving):
            task.cancel()
        connections.dec()
        for task in (sending, receiving):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await _close(stream)


def _closing(sending: asyncio.Task[None]) -> tuple[int, str]:
    error = sending.exception()
    if isinstance(error, StreamClosed):
        return _CLOSE_FOR[error.reason]
    if isinstance(error, Unavailable):
        return CLOSE_TRY_AGAIN_LATER, "the database is unavailable: resume shortly"
    if error is not None:
        log.error("live stream failed", exc_info=error)
    return 1011, "internal error"


class LiveWebsocket(Websocket):
    """The application's websocket object: with a send for frames after ``accept()``."""

    # For the access log: whether the connection was accepted, and how the server closed it.
    accepted = False
    close_code: int | None = None

    async def accept(
        self, headers: dict[str, str] | Headers | None = None, subprotocol: str | None = None
    ) -> None:
        """Accept the connection (once; later calls do nothing)."""
        self.accepted = True
        await super().accept(headers, subprotocol)

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection with ``code``."""
        self.close_code = code
        await super().close(code, reason)

    async def send_accepted(self, frame: str) -> None:
        """Send a text frame on an accepted connection.

        ``send()`` also accepts the connection again and yields to the event loop
        before every frame: a thousand connections pay that for every message.
        """
        await self._send(frame)


def _accepted_websocket() -> LiveWebsocket:
    current = websocket._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, LiveWebsocket):
        raise TypeError("the application's websocket_class must be LiveWebsocket")
    return current


async def _send_events(stream: Stream) -> None:
    send = _accepted_websocket().send_accepted
    async for batch in stream:
        if batch is None:
            await send(HEARTBEAT_FRAME)
            continue
        for event in batch:
            await send(ws_frame(event))


async def _drain(replies: AsyncIterator[str]) -> None:
    send = _accepted_websocket().send_accepted
    async for reply in replies:
        await send(reply)


async def _receive_nothing() -> AsyncIterator[str]:
    while True:
        await websocket.receive()
        yield _reply("error", None, _problem(400, "this stream takes no frames"))


async def _receive_actions(principal: Principal, session_id: uuid.UUID) -> AsyncIterator[str]:
    """Each client frame acted on through the same service calls as REST; one reply each."""
    state = app_state()
    context = {"message_chars": state.settings.limits.message_chars}
    while True:
        data = await websocket.receive()
        if not isinstance(data, str):
            yield _reply("error", None, _problem(400, "send JSON text frames"))
            continue
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            yield _reply("error", None, _problem(400, "the frame is not valid JSON"))
            continue
        ref = raw.get("ref") if isinstance(raw, dict) else None
        ref = ref if isinstance(ref, str) and len(ref) <= 64 else None
        try:
            frame = _frame(raw, context)
            result = await _act(principal, session_id, frame)
        except (DomainError, InvalidInput, ValidationError) as error:
            yield _reply("error", ref, problem_for(error) or {})
            continue
        yield _reply("ack", ref, {"type": frame.type, **result})


def _frame(raw: Any, context: dict[str, Any]) -> SendFrame | TypingFrame | ReadFrame:
    model = _FRAMES.get(raw.get("type")) if isinstance(raw, dict) else None
    if model is None:
        detail = f"must be one of: {', '.join(str(kind) for kind in _FRAMES)}"
        raise InvalidInput([{"detail": detail, "pointer": "#/type"}])
    return model.model_validate(raw, context=context)


async def _act(
    principal: Principal, session_id: uuid.UUID, frame: SendFrame | TypingFrame | ReadFrame
) -> dict[str, Any]:
    state = app_state()
    kind = RouteClass.MESSAGES if isinstance(frame, SendFrame) else RouteClass.WRITES
    await rate_limits.limit(principal, kind, ws=True)
    if isinstance(frame, TypingFrame):
        sent = await state.live.typing(principal, session_id, checked=True)
        return {"sent": sent}
    if isinstance(frame, ReadFrame):
        position = await inbox.mark_read(
            state.db, principal, session_id=session_id, seq=frame.seq, publish=state.live.publish
        )
        return {"seq": position}
    posted = await messages_routes.post(principal, session_id, frame)
    return {"id": str(posted.message.id), "seq": posted.message.seq}


def _reply(kind: str, ref: str | None, data: dict[str, Any]) -> str:
    return _json({"event": kind, "id": None, "data": {"ref": ref, **data}})


def _json(value: Any) -> str:
    # Compact, as the events are.
    return json.dumps(value, separators=(",", ":"))


def _problem(status: int, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": "Bad frame", "status": status, "detail": detail}


# -- typing over REST ----------------------------------------------------------------------


@blueprint.post("/sessions/<uuid:session_id>/typing")
@authenticated
@empty_response(204, "Passed on to the streams, or dropped (see above).")
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def typing(session_id: uuid.UUID, principal: Principal) -> Response:
    """Tell a session's live streams that the caller is typing.

    Never stored. At most one typing event per caller and session every
    `live.typing_interval_seconds` (2 s) reaches the streams; more are dropped
    (the answer is 204 either way).
    """
    await app_state().live.typing(principal, session_id, checked=False)
    return no_content()
