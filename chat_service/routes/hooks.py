"""Per-request plumbing: request ids and headers every response carries."""

from __future__ import annotations

import re
import uuid

from quart import Quart, Response, request, websocket

from chat_service import logs

REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def register(app: Quart) -> None:
    """Install the request hooks on ``app``."""

    @app.before_request
    async def take_request_id() -> None:
        _take_request_id(request.headers.get(REQUEST_ID_HEADER, ""))

    @app.before_websocket
    async def take_websocket_request_id() -> None:
        _take_request_id(websocket.headers.get(REQUEST_ID_HEADER, ""))

    @app.after_request
    async def stamp_response(response: Response) -> Response:
        request_id = logs.request_id.get()
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _take_request_id(offered: str) -> None:
    request_id = offered if _WELL_FORMED_ID.fullmatch(offered) else uuid.uuid4().hex
    logs.request_id.set(request_id)
