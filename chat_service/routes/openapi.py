"""The OpenAPI document, with what quart-schema cannot say by itself.

Errors are served as ``application/problem+json``, and a route may answer one status
with either of two bodies (``Prefer: return=minimal``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import quart_schema
from pydantic import BaseModel
from quart import Quart

from chat_service.routes import idempotency
from chat_service.routes.auth import SECURITY_DESCRIPTION, SECURITY_SCHEME
from chat_service.routes.state import app_state

ALTERNATIVES_ATTRIBUTE = "_chat_service_alternative_responses"
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


class OpenAPIProvider(quart_schema.OpenAPIProvider):
    """quart-schema's document, with problem media types and alternative bodies."""

    def schema(self) -> dict[str, Any]:
        """Build the document."""
        document = super().schema()
        for operations in document["paths"].values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if int(status) >= 400 and "application/json" in content:
                        content["application/problem+json"] = content.pop("application/json")
        required = app_state(cast(Quart, self._app)).settings.auth.required
        scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
        scheme["description"] = SECURITY_DESCRIPTION + (
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
                if idempotent:
                    parameters = operation.setdefault("parameters", [])
                    parameters.append(idempotency.PARAMETER)
        return document


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
