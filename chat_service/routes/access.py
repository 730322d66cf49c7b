"""The access log and the request metrics: one line and one count per request.

The application writes the access line itself, rather than Hypercorn, because only
it knows the route template (``/sessions/<uuid:session_id>/messages``). The line
holds the request id, route, method, path (never the query string, which may carry
a live ticket or search text), status and duration; never a header or a body.

A WebSocket gets its line when it ends: status 101 once accepted, its duration the
connection's life, and ``close_code`` when the server closed it (a refusal such as
4401, or 1001 at shutdown). WebSockets are not counted in the HTTP request metrics; the live
connections gauge follows them.
"""

from __future__ import annotations

import logging
import time

from quart import Quart, Response, g, request, websocket
from quart.typing import ResponseTypes
from quart.wrappers import BaseRequestWebsocket

from chat_service import logs, metrics

access_log = logging.getLogger(logs.ACCESS_LOGGER)

# Any other method is counted as OTHER: a client may send any token as a method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STARTED = "chat_service_started"
_STATUS = "chat_service_ws_status"


def register(app: Quart, *, log_access: bool) -> None:
    """Install the hooks on ``app``; register it before any other hook.

    Its ``before_request`` then runs first and its ``after_request`` last (Quart runs
    those in reverse), so it times the whole request and sees the final response.
    """

    @app.before_request
    @app.before_websocket
    async def start_clock() -> None:
        setattr(g, _STARTED, time.perf_counter())

    @app.after_request
    async def observe_request(response: Response) -> Response:
        seconds = _elapsed()
        route, method = _route(request), _method(request.method)
        status = response.status_code
        metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
        metrics.HTTP_REQUEST_DURATION.labels(route, method).observe(seconds)
        if log_access:
            _log(route, method, request.path, status, seconds, request.remote_addr)
        return response

    @app.after_websocket
    async def websocket_refused(response: ResponseTypes | None) -> ResponseTypes | None:
        # Only a connection that was not accepted has an HTTP answer (a refusal).
        if response is not None:
            setattr(g, _STATUS, response.status_code)
        return response

    @app.teardown_websocket
    async def observe_websocket(_error: BaseException | None) -> None:
        # Teardown: also when the client went away and the handler was cancelled.
        if not log_access:
            return
        # (The attributes of the application's websocket class, LiveWebsocket.)
        status = 101 if getattr(websocket, "accepted", False) else g.get(_STATUS, 500)
        seconds = _elapsed()
        close_code = getattr(websocket, "close_code", None)
        _log(
            _route(websocket),
            "GET",
            websocket.path,
            status,
            seconds,
            websocket.remote_addr,
            close_code=close_code,
        )


def _elapsed() -> float:
    started: float = g.get(_STARTED, time.perf_counter())
    return time.perf_counter() - started


def _route(current: BaseRequestWebsocket) -> str:
    rule = current.url_rule
    return rule.rule if rule is not None else metrics.UNMATCHED_ROUTE


def _method(method: str) -> str:
    return method if method in _METHODS else "OTHER"


def _log(
    route: str,
    method: str,
    path: str,
    status: int,
    seconds: float,
    client: str | None,
    **more: object,
) -> None:
    milliseconds = round(seconds * 1000, 3)
    fields = {
        "route": route,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": milliseconds,
        "client": client,
        **more,
    }
    access_log.info("%s %s %s %.1fms", method, path, status, milliseconds, extra=fields)
