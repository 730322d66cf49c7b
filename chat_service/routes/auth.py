"""Authentication: the ``Authorization: Bearer`` credential into a ``Principal``.

One header carries every kind of credential: a customer token (``cst_...``), an API
key (``csk_...``) or an identity provider's JWT. Without one, the caller is the local
principal while ``auth.required`` is false, and gets 401 otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from quart import request
from quart_schema import (
    APIKeySecurityScheme,
    HttpSecurityScheme,
    document_response,
    security_scheme,
)

from chat_service.errors import Unauthenticated
from chat_service.routes import rate_limits
from chat_service.routes.state import app_state
from chat_service.services import credentials
from chat_service.services.access import Principal, local_principal
from chat_service.services.jwt_tokens import looks_like_jwt
from chat_service.services.rate_limits import RouteClass
from chat_service.transport.problems import Problem

SECURITY_SCHEME = "bearer"
# Live streams also take a single-use ticket in the query instead (routes/live.py).
TICKET_SCHEME = "ticket"
# The OpenAPI security schemes: Swagger UI's "Authorize" sends them on every call.
SECURITY_SCHEMES = {
    SECURITY_SCHEME: HttpSecurityScheme(scheme="bearer"),
    TICKET_SCHEME: APIKeySecurityScheme(name="ticket", in_="query"),
}
SECURITY_DESCRIPTION = (
    "One header for every kind of caller: a customer token (`cst_...`, from "
    "`POST /sessions`), an API key (`csk_...`, from `POST /api-keys` or `chat-service "
    "create-admin`) or the identity provider's JWT (agents and admins)."
)
TICKET_DESCRIPTION = (
    "A single-use ticket from `POST /live/tickets`, for clients that cannot send an "
    "`Authorization` header (a browser's `EventSource`)."
)
Handler = Callable[..., Awaitable[Any]]


def authenticated(handler: Handler) -> Handler:
    """Resolve the caller, count it against its rate limits, pass it on as ``principal``."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            principal = await current_principal()
        except Unauthenticated:
            await count_failure()
            raise
        await rate_limits.limit(principal)
        return await handler(*args, principal=principal, **kwargs)

    documented = document_response(Problem, 429)(wrapper)
    return security_scheme([{SECURITY_SCHEME: []}])(documented)


async def count_failure(kind: RouteClass | None = None, *, ws: bool = False) -> None:
    """Count a refused credential against the client's address, like an anonymous call.

    Guessing tokens then runs into the address's limits (429, after the refusal
    delay) instead of getting a fresh 401 as fast as it asks.

    Raises:
        RateLimited: the address is above a limit of the class.
    """
    await rate_limits.limit(local_principal(), kind, ws=ws)


async def current_principal() -> Principal:
    """The caller of the current request.

    Raises:
        Unauthenticated: no credential where one is required, or a credential that
            is malformed, unknown, revoked or expired.
    """
    return await principal_from(request.headers.get("Authorization"))


async def principal_from(header: str | None) -> Principal:
    """The caller an ``Authorization`` header value names (None: no header).

    Raises:
        Unauthenticated: as ``current_principal``.
    """
    state = app_state()
    if header is None:
        if state.settings.auth.required:
            raise Unauthenticated("this request needs a credential: Authorization: Bearer ...")
        return local_principal()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send the credential as Authorization: Bearer <token>")
    if state.jwt.enabled and looks_like_jwt(token):
        identity = await state.jwt.verify(token)
        return await credentials.from_jwt(state.db, identity)
    return await credentials.from_bearer(state.db, token)
