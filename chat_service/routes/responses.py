"""JSON responses serialised straight from the response models."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from quart import Response


def json_response(
    model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``model`` as an ``application/json`` response.

    pydantic-core writes the JSON in one pass, with the same field names, aliases and
    exclusions as ``model_dump(mode="json")``. Routes document the model with
    ``document_response``; the value is a model instance, so it needs no validation.
    """
    return Response(
        model.model_dump_json(),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json",
    )


class _NoContent(Response):
    # Quart would label the empty body text/html.
    default_mimetype = None  # type: ignore[assignment]


def no_content() -> Response:
    """A ``204 No Content`` answer: no body, so no ``Content-Type`` either."""
    return _NoContent(status=204)
