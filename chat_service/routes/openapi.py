"""The OpenAPI document, with what quart-schema cannot say by itself.

Errors are served as ``application/problem+json``; a route may answer one status with
either of two bodies (``Prefer: return=minimal``), with no body at all (204) or with an
event stream; path ids are UUIDs; a JSON body is required unless the route says it is
optional; and the bounds that come from the settings (page sizes, message length) are
stated where the models cannot state them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import quart_schema
from pydantic import BaseModel
from quart import Quart
from werkzeug.routing import BaseConverter, UUIDConverter

from chat_service.config import LimitSettings
from chat_service.routes import idempotency
from chat_service.routes.auth import (
    SECURITY_DESCRIPTION,
    SECURITY_SCHEME,
    TICKET_DESCRIPTION,
    TICKET_SCHEME,
)
from chat_service.routes.state import app_state

ALTERNATIVES_ATTRIBUTE = "_chat_service_alternative_responses"
RESPONSES_ATTRIBUTE = "_chat_service_responses"
OPTIONAL_BODY_ATTRIBUTE = "_chat_service_optional_body"
F = TypeVar("F", bound=Callable[..., Any])
_RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def alternative_response(model: type[BaseModel], status: int) -> Callable[[F], F]:
    """Document ``model`` as another possible body of the ``status`` response."""

    def decorator(view: F) -> F:
        alternatives = {**getattr(view, ALTERNATIVES_ATTRIBUTE, {})}
        alternatives[status] = [*alternatives.get(status, []), model]
        setattr(view, ALTERNATIVES_ATTRIBUTE, alternatives)
        return view

    return decorator


def empty_response(status: int, description: str) -> Callable[[F], F]:
    """Document a ``status`` answer that has no body (``204 No Content``)."""
    return _response(status, {"description": description})


def event_stream_response(events: list[str], description: str) -> Callable[[F], F]:
    """Document the 200 answer as a ``text/event-stream`` of the named ``events``.

    Before OpenAPI 3.2, the schema of an event-stream media type describes one event:
    its ``event`` name, its ``data`` (JSON text) and its ``id``.
    """
    event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": events},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
        },
    }
    content = {"text/event-stream": {"schema": event}}
    return _response(200, {"description": description, "content": content})


def _response(status: int, response: dict[str, Any]) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        setattr(
            view, RESPONSES_ATTRIBUTE, {**getattr(view, RESPONSES_ATTRIBUTE, {}), status: response}
        )
        return view

    return decorator


class OpenAPIProvider(quart_schema.OpenAPIProvider):
    """quart-schema's document, with what it cannot say by itself (see above)."""

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        """A path parameter; ids are UUIDs in their canonical form."""
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, UUIDConverter):
            parameter["schema"] = {"type": "string", "format": "uuid"}
        return parameter

    def schema(self) -> dict[str, Any]:
        """Build the document."""
        document = super().schema()
        for operations in document["paths"].values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if int(status) >= 400 and "application/json" in content:
                        content["application/problem+json"] = content.pop("application/json")
        settings = app_state(cast(Quart, self._app)).settings
        required = settings.auth.required
        schemes = document["components"]["securitySchemes"]
        schemes[TICKET_SCHEME]["description"] = TICKET_DESCRIPTION
        schemes[SECURITY_SCHEME]["description"] = SECURITY_DESCRIPTION + (
            ""
            if required
            else " Authentication is off: calls without a credential use "
            "the open API on the default tenant."
        )
        if not required:
            for operations in document["paths"].values():
                for operation in operations.values():
                    if operation.get("security"):
                        # A copy: the list is the view's own, reused by the next build.
                        operation["security"] = [*operation["security"], {}]
        for rule in self.generate_rules():
            view = self._app.view_functions[rule.endpoint]
            alternatives = getattr(view, ALTERNATIVES_ATTRIBUTE, {})
            path = _RULE_VARIABLE.sub(r"{\1}", rule.rule)
            idempotent = getattr(view, idempotency.IDEMPOTENT_ATTRIBUTE, False)
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                operation = document["paths"][path][method.lower()]
                for status, models in alternatives.items():
                    _add_alternatives(document, operation, status, models)
                for status, response in getattr(view, RESPONSES_ATTRIBUTE, {}).items():
                    operation["responses"][str(status)] = response
                if "requestBody" in operation:
                    optional = getattr(view, OPTIONAL_BODY_ATTRIBUTE, False)
                    operation["requestBody"] = {
                        **operation["requestBody"],
                        "required": not optional,
                    }
                _add_bounds(operation, settings.limits)
                _drop_security_parameters(operation, schemes)
                if idempotent:
                    parameters = operation.setdefault("parameters", [])
                    parameters.append(idempotency.PARAMETER)
        return document


def _add_bounds(operation: dict[str, Any], limits: LimitSettings) -> None:
    """The bounds the settings decide: page sizes and the length of a message."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter["name"] == "limit":
            for choice in _choices(parameter["schema"]):
                if choice.get("type") == "integer":
                    choice.update(minimum=1, maximum=limits.page_size_max)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    content = body.get("schema", {}).get("properties", {}).get("content")
    if content is not None:  # a message's text: NewMessage, MessageEdit
        content["maxLength"] = limits.message_chars


def _drop_security_parameters(operation: dict[str, Any], schemes: dict[str, Any]) -> None:
    """Leave out the query parameters that the operation's security schemes name.

    Such a parameter (the live streams' ``ticket``) is the scheme's, not one of its own.
    """
    named = {
        schemes[name]["name"]
        for requirement in operation.get("security", [])
        for name in requirement
        if schemes[name].get("in") == "query"
    }
    if named:
        operation["parameters"] = [
            parameter
            for parameter in operation["parameters"]
            if not (parameter["in"] == "query" and parameter["name"] in named)
        ]


def _choices(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("anyOf", [schema]))


def _add_alternatives(
    document: dict[str, Any], operation: dict[str, Any], status: int, models: list[type[BaseModel]]
) -> None:
    responses = operation["responses"]
    response = responses[status] if status in responses else responses[str(status)]
    media = response["content"]["application/json"]
    choices = [media["schema"]]
    for model in models:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        document["components"]["schemas"].update(schema.pop("$defs", {}))
        document["components"]["schemas"][model.__name__] = schema
        choices.append({"$ref": f"#/components/schemas/{model.__name__}"})
    media["schema"] = {"oneOf": choices}
