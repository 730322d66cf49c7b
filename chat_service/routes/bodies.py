"""Reading requests strictly: the JSON body and the query string."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import request
from quart_schema import (
    DataSource,
    RequestSchemaValidationError,
    document_querystring,
    document_request,
    document_response,
)
from quart_schema.validation import QuerystringValidationError
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from chat_service.config import LimitSettings
from chat_service.routes.openapi import OPTIONAL_BODY_ATTRIBUTE
from chat_service.routes.problems import InvalidInput
from chat_service.routes.state import app_state
from chat_service.transport.problems import Problem

M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Awaitable[Any]]


def json_body(model: type[M], *, optional: bool = False) -> Callable[[Handler], Handler]:
    """Validate the JSON body against ``model`` and pass it to the handler as ``data``.

    Answers 415 for another media type, 413 above ``http.max_body_bytes`` (Quart checks
    the declared length before reading and the running total while reading), 408 when
    the body does not arrive within ``http.body_timeout_seconds``, 400 for a body that
    is not UTF-8 or not JSON, and 422 naming each invalid field. With ``optional``, an
    empty body means ``{}``. Routes document these problems; this documents the 408,
    which only reading a body can give.
    """

    def decorator(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw = await _read_body(optional=optional)
            context = {"message_chars": app_state().settings.limits.message_chars}
            try:
                if raw is None:
                    parsed = model.model_validate({}, context=context)
                else:
                    # pydantic-core parses and validates the bytes in one pass.
                    parsed = model.model_validate_json(raw, context=context)
            except ValidationError as error:
                if raw is None or not _unparsable(error):
                    raise RequestSchemaValidationError(error) from None
                # Python's parser says exactly why (400), or accepts what pydantic-core
                # does not (NaN, lone surrogates) and validation gives the 422.
                try:
                    parsed = model.model_validate(_decode_json(raw), context=context)
                except ValidationError as python_error:
                    raise RequestSchemaValidationError(python_error) from None
            return await handler(*args, data=parsed, **kwargs)

        setattr(wrapper, OPTIONAL_BODY_ATTRIBUTE, optional)
        documented = document_response(Problem, 408)(wrapper)
        return document_request(model, source=DataSource.JSON)(documented)

    return decorator


def query_args(model: type[M]) -> Callable[[Handler], Handler]:
    """Validate the query string against ``model`` and pass it as ``query_args``.

    Answers 422 naming each invalid parameter. A repeated parameter arrives as a
    list, which a scalar field refuses.
    """

    def decorator(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await handler(*args, query_args=parse_query(model, request.args), **kwargs)

        return document_querystring(model)(wrapper)

    return decorator


def parse_query(model: type[M], args: MultiDict[str, str]) -> M:
    """``args`` (a request's or a WebSocket's query) validated against ``model``.

    Raises:
        QuerystringValidationError: naming each invalid parameter (answers 422).
    """
    values = {key: items if len(items) > 1 else items[0] for key, items in args.lists()}
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise QuerystringValidationError(error) from None


def page_limit(requested: int | None, limits: LimitSettings) -> int:
    """The page size a list answers with: the default, or ``requested`` if allowed.

    Raises:
        InvalidInput: ``requested`` is outside 1 to ``limits.page_size_max``.
    """
    limit = limits.page_size_default if requested is None else requested
    if not 1 <= limit <= limits.page_size_max:
        detail = f"must be between 1 and {limits.page_size_max}"
        raise InvalidInput([{"detail": detail, "parameter": "limit"}])
    return limit


def _unparsable(error: ValidationError) -> bool:
    return any(detail["type"] == "json_invalid" for detail in error.errors())


async def _read_body(*, optional: bool) -> bytes | None:
    """The raw JSON body, after the media type and encoding checks; None for "no body"."""
    is_json = request.mimetype == "application/json" or request.mimetype.endswith("+json")
    if not is_json and not optional:
        raise UnsupportedMediaType("Send the body as application/json.")
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if not raw.strip() and optional:
        return None
    if not is_json:
        raise UnsupportedMediaType("Send the body as application/json.")
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise UnsupportedMediaType("Send the body without a Content-Encoding.")
    if request.mimetype_params.get("charset", "utf-8").lower() not in {"utf-8", "utf8"}:
        # RFC 8259: JSON exchanged between systems is UTF-8.
        raise UnsupportedMediaType("Send the body as application/json in UTF-8.")
    return raw


def _decode_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The body is not valid UTF-8.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BadRequest("The body is nested too deeply.") from None
    except ValueError:
        raise BadRequest("The body is not valid JSON.") from None
