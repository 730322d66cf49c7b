"""Rate limits at the edge: which class a request is, whose count it adds to, headers."""

from __future__ import annotations

import asyncio
import math
import random

from quart import Quart, Response, g, request, websocket

from chat_service.errors import RateLimited
from chat_service.routes.state import app_state
from chat_service.services.access import Principal
from chat_service.services.rate_limits import Quota, RouteClass, caller

_CLASSES = {
    ("POST", "/sessions"): RouteClass.SESSIONS,
    ("POST", "/sessions/<uuid:session_id>/messages"): RouteClass.MESSAGES,
}


def route_class() -> RouteClass:
    """The class of the current request: by its method and route."""
    if request.method in ("GET", "HEAD"):
        return RouteClass.READS
    rule = request.url_rule.rule if request.url_rule is not None else ""
    return _CLASSES.get((request.method, rule), RouteClass.WRITES)


async def limit(principal: Principal, kind: RouteClass | None = None, *, ws: bool = False) -> None:
    """Count the current request (or WebSocket frame) against the caller's limits.

    A refused request (or frame) is answered after half to all of
    ``rate_limits.refusal_delay_seconds`` (at most its Retry-After): a client that sends
    the next request as soon as it has an answer, over however many connections, then
    gets about one refusal per connection per delay, and a flood costs the worker next
    to nothing; a WebSocket's next frames wait behind it. The spread keeps a flood's
    connections from coming back all at once.

    Raises:
        RateLimited: the caller is above a limit of the class.
    """
    state = app_state()
    limiter = state.rate_limits
    if limiter is None:
        return
    address = websocket.remote_addr if ws else request.remote_addr
    try:
        quota = await limiter.hit(kind or route_class(), caller(principal, address))
    except RateLimited as error:
        delay = min(state.settings.rate_limits.refusal_delay_seconds, error.retry_after)
        delay *= jitter()
        if delay > 0:
            await asyncio.sleep(delay)
            # Counted from when the answer leaves, not from when the request came.
            error.retry_after = max(0, math.ceil(error.retry_after - delay))
        if not ws:
            g.rate_limit_quota = Quota(error.limit, 0, error.retry_after, error.policy)
        raise
    if quota is not None and not ws:
        g.rate_limit_quota = quota


def jitter() -> float:
    """The share of the refusal delay this refusal waits: half to all of it."""
    return random.uniform(0.5, 1.0)  # noqa: S311 - spreading load, not a secret


def register(app: Quart) -> None:
    """Stamp the ``RateLimit-*`` headers on the answers to limited requests."""

    @app.after_request
    async def rate_limit_headers(response: Response) -> Response:
        quota: Quota | None = g.get("rate_limit_quota")
        if quota is not None:
            response.headers["RateLimit-Limit"] = str(quota.limit)
            response.headers["RateLimit-Remaining"] = str(quota.remaining)
            response.headers["RateLimit-Reset"] = str(quota.reset_seconds)
            response.headers["RateLimit-Policy"] = quota.policy
        return response
