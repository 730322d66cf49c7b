"""One mapping from every error to an RFC 9457 ``application/problem+json`` answer."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError
from quart import Quart, Response, json, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, InternalServerError

from chat_service.errors import (
    Conflict,
    DomainError,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidField,
    InvalidIdempotencyKey,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE: Final = "application/problem+json"
STATUS: Final[Mapping[type[DomainError], int]] = {
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidCursor: 400,
    InvalidIdempotencyKey: 400,
    IdempotencyKeyReused: 422,
    Unavailable: 503,
    RateLimited: 429,
}
RETRY_AFTER_SECONDS: Final = "5"
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class InvalidInput(Exception):
    """Input that passed the schema but breaks a configured limit (answers 422)."""

    def __init__(self, errors: Sequence[Mapping[str, str]]) -> None:
        super().__init__("invalid input")
        self.errors = list(errors)


def problem(
    status: int, title: str, *, detail: str, kind: str | None = None, **extra: Any
) -> Response:
    """An ``application/problem+json`` response."""
    body = problem_body(status, title, detail=detail, kind=kind, **extra)
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)


def problem_body(
    status: int, title: str, *, detail: str, kind: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The members of a problem document."""
    return {
        "type": f"urn:chat-service:problem:{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }


def problem_for(error: Exception) -> dict[str, Any] | None:
    """The problem document for a domain or input error; None for anything else.

    For errors that do not travel as an HTTP response (WebSocket frames).
    """
    if isinstance(error, InvalidField):
        return _invalid_body([{"detail": error.detail, **error.location()}])
    if isinstance(error, InvalidInput):
        return _invalid_body(error.errors)
    if isinstance(error, ValidationError):
        return _invalid_body(field_errors(error, location="body"))
    if isinstance(error, DomainError):
        status = next((s for cls, s in STATUS.items() if isinstance(error, cls)), 500)
        return problem_body(status, error.title, kind=error.code, detail=error.detail)
    return None


def field_errors(error: ValidationError, *, location: str) -> list[dict[str, str]]:
    """Each Pydantic error as ``{"detail", "pointer"|"parameter"}``.

    The submitted value is left out on purpose: it may be a customer's private text.
    """
    result = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        path = [str(part) for part in item["loc"]]
        if item["type"] == "extra_forbidden" and not _NAME.fullmatch(path[-1]):
            # An unknown member's name is submitted text too: named only when it looks
            # like a field name, never when it could be anything a client typed.
            path = path[:-1]
            item["msg"] = "Unknown fields are not permitted"
        if location == "body":
            pointer = "".join(f"/{_escape_pointer(part)}" for part in path)
            result.append({"detail": item["msg"], "pointer": f"#{pointer}"})
        else:
            result.append({"detail": item["msg"], "parameter": ".".join(path) or "(query)"})
    return result


def _escape_pointer(part: str) -> str:
    # RFC 6901: "~" and "/" inside a member name are escaped.
    return part.replace("~", "~0").replace("/", "~1")


def register(app: Quart) -> None:
    """Install the error handlers on ``app``."""

    @app.errorhandler(InvalidField)
    async def invalid_field(error: InvalidField) -> Response:
        return _invalid([{"detail": error.detail, **error.location()}])

    @app.errorhandler(DomainError)
    async def domain(error: DomainError) -> Response:
        status = next((s for cls, s in STATUS.items() if isinstance(error, cls)), 500)
        response = problem(status, error.title, kind=error.code, detail=error.detail)
        if status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        if isinstance(error, RateLimited):
            response.headers["Retry-After"] = str(error.retry_after)
        if isinstance(error, IdempotencyKeyInUse) and error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        if status == 401:
            # RFC 6750: name the scheme; say the token was bad when one was sent.
            challenge = 'Bearer realm="chat-service"'
            if "Authorization" in request.headers:
                challenge += ', error="invalid_token"'
            response.headers["WWW-Authenticate"] = challenge
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid(error: RequestSchemaValidationError) -> Response:
        cause = error.validation_error
        location = "body" if type(error) is RequestSchemaValidationError else "query"
        errors = (
            field_errors(cause, location=location) if isinstance(cause, ValidationError) else []
        )
        return _invalid(errors)

    @app.errorhandler(InvalidInput)
    async def invalid_input(error: InvalidInput) -> Response:
        return _invalid(error.errors)

    @app.errorhandler(InternalServerError)
    async def internal(_error: InternalServerError) -> Response:
        # Quart has logged the traceback once; the body never carries exception text.
        return problem(
            500,
            "Internal Server Error",
            detail="The server could not complete the request.",
        )

    @app.errorhandler(HTTPException)
    async def http(error: HTTPException) -> Response:
        status = error.code or 500
        response = problem(
            status, error.name, detail=error.description or error.name, kind=_kind(status)
        )
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response


def _invalid(errors: list[Any]) -> Response:
    return Response(json.dumps(_invalid_body(errors)), status=422, mimetype=PROBLEM_MIMETYPE)


def _invalid_body(errors: Sequence[Any]) -> dict[str, Any]:
    return problem_body(
        422,
        "Request is not valid",
        kind="validation-error",
        detail="One or more inputs are not valid; see errors.",
        errors=list(errors),
    )


def _kind(status: int) -> str | None:
    return {
        400: "bad-request",
        404: "not-found",
        405: "method-not-allowed",
        408: "request-timeout",
        413: "payload-too-large",
        415: "unsupported-media-type",
    }.get(status)
