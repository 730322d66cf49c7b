"""``GET /metrics``: the Prometheus metrics, for scrapers rather than API clients.

Not part of the API: left out of the OpenAPI document, never rate-limited, and it
takes no API credential. It is protected as ``metrics.*`` says: off (404), a bearer
token of its own (401 without it), or served only on a listener of its own
(``metrics.bind``), which then serves nothing else, while the public one answers 404.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Quart, Response, abort, request, websocket
from quart.wrappers import BaseRequestWebsocket
from quart_schema import hide

from chat_service import metrics
from chat_service.errors import Unauthenticated
from chat_service.routes.state import app_state

blueprint = Blueprint("metrics", __name__)
ENDPOINT = "metrics.scrape"
# A listener bound to every address sees the address a request was sent to instead.
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared, not bound


@blueprint.get("/metrics")
@hide
async def scrape() -> Response:
    """Get the service's metrics in the Prometheus text format."""
    settings = app_state().settings.metrics
    if not settings.enabled or (settings.bind and not on_metrics_listener(request)):
        abort(404)
    token = settings.token.get_secret_value()
    if token and not _bearer_matches(request.headers.get("Authorization", ""), token):
        raise Unauthenticated("/metrics needs its token: Authorization: Bearer <metrics.token>")
    body, content_type = metrics.exposition(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def on_metrics_listener(current: BaseRequestWebsocket) -> bool:
    """Whether ``current`` arrived on the ``metrics.bind`` listener."""
    listener = app_state().settings.metrics.listener
    server = current.scope.get("server")
    if listener is None or not server:
        return False
    host, port = listener
    return bool(server[1] == port and (host in _ANY_ADDRESS or server[0] == host))


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, offered = header.strip().partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    offered_bytes, token_bytes = offered.strip().encode(), token.encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(offered_bytes, token_bytes)


def register(app: Quart) -> None:
    """Keep the metrics' own listener (``metrics.bind``) to ``/metrics`` alone."""
    settings = app_state(app).settings.metrics
    if not settings.enabled or settings.listener is None:
        return  # no such listener

    @app.before_request
    async def metrics_listener_serves_metrics_only() -> None:
        if request.endpoint != ENDPOINT and on_metrics_listener(request):
            abort(404)

    @app.before_websocket
    async def metrics_listener_serves_no_websocket() -> None:
        if on_metrics_listener(websocket):
            abort(404)
