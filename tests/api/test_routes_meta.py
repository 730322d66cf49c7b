"""Every route is documented: summary, tag, the problems it can answer, a stable operationId."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from quart_schema.openapi import (
    QUART_SCHEMA_HIDDEN_ATTRIBUTE,
    QUART_SCHEMA_SECURITY_ATTRIBUTE,
    QUART_SCHEMA_TAG_ATTRIBUTE,
)
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
    QUART_SCHEMA_RESPONSE_ATTRIBUTE,
)

from tests.api.access_world import AUTH_REQUIRED
from tests.api.test_access import LIVE_MATRIX, MATRIX

# Clients generate code from these: renaming a handler is a breaking change.
OPERATION_IDS = {
    ("/health", "get"): "get_health",
    ("/health/ready", "get"): "get_readiness",
    ("/sessions", "post"): "post_create_session",
    ("/sessions/{session_id}", "get"): "get_session",
    ("/sessions/{session_id}/messages", "post"): "post_create_message",
    ("/sessions/{session_id}/messages", "get"): "get_messages_page",
    ("/sessions", "get"): "get_inbox",
    ("/sessions/{session_id}", "patch"): "patch_update_session",
    ("/sessions/{session_id}/read", "post"): "post_mark_read",
    ("/sessions/{session_id}/messages/{message_id}", "patch"): "patch_edit_message",
    ("/sessions/{session_id}/messages/{message_id}", "delete"): "delete_delete_message",
    ("/sessions/{session_id}/messages/{message_id}", "get"): "get_message",
    ("/agents", "post"): "post_create_agent",
    ("/agents", "get"): "get_agents",
    ("/agents/{agent_id}", "get"): "get_agent",
    ("/agents/{agent_id}", "patch"): "patch_update_agent",
    ("/api-keys", "post"): "post_create_api_key",
    ("/api-keys", "get"): "get_api_keys",
    ("/api-keys/{key_id}", "get"): "get_api_key",
    ("/api-keys/{key_id}", "delete"): "delete_revoke_api_key",
    ("/live/tickets", "post"): "post_create_ticket",
    ("/sessions/{session_id}/typing", "post"): "post_typing",
    ("/sessions/{session_id}/events", "get"): "get_session_events",
    ("/events", "get"): "get_tenant_events",
}
# Authenticated routes that refuse no caller (their access rows hold no 403).
NEVER_FORBIDDEN = {"/live/tickets"}


def api_views(app: Quart, *, websocket: bool = False) -> list[tuple[str, Any, set[str]]]:
    """(path, view, tags) of every route that the OpenAPI document describes (websocket:
    of every WebSocket route instead, which it cannot describe)."""
    views = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint == "static" or getattr(view, QUART_SCHEMA_HIDDEN_ATTRIBUTE, False):
            continue
        if rule.websocket != websocket:
            continue
        blueprint = app.blueprints.get(rule.endpoint.rpartition(".")[0])
        tags = {
            *getattr(view, QUART_SCHEMA_TAG_ATTRIBUTE, set()),
            *getattr(blueprint, QUART_SCHEMA_TAG_ATTRIBUTE, set()),
        }
        views.append((rule.rule, view, tags))
    return views


def openapi_path(rule: str) -> str:
    """``/sessions/<uuid:session_id>`` as OpenAPI writes it: ``/sessions/{session_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_route_has_a_summary_a_tag_and_its_problems(app: Quart) -> None:
    for path, view, tags in api_views(app):
        responses = getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {})
        summary = (view.__doc__ or "").strip().splitlines()
        assert summary, f"{path}: docstring"
        assert len(summary[0]) <= 70, f"{path}: summary line"
        assert tags, f"{path}: tag"
        if "<" in path:
            assert 404 in responses, f"{path}: documents 404"
        if path != "/health":
            assert 503 in responses, f"{path}: documents 503 (database unavailable)"
        if hasattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE):
            assert {400, 408, 413, 415, 422} <= responses.keys(), f"{path}: body problems"
        if hasattr(view, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE):
            assert 422 in responses, f"{path}: query problems"
        if not path.startswith("/health"):
            assert getattr(view, QUART_SCHEMA_SECURITY_ATTRIBUTE, None), f"{path}: security"
            assert 401 in responses, f"{path}: documents 401"
            assert 429 in responses, f"{path}: documents 429 (rate limits)"
            if path not in NEVER_FORBIDDEN:
                assert 403 in responses, f"{path}: documents 403"


def test_the_refusals_of_the_access_matrix_are_documented(app: Quart) -> None:
    """Each 401/403/404 a caller gets is documented, and a 403 nobody gets is not."""
    views = {
        (rule.rule, method): app.view_functions[rule.endpoint]
        for rule in app.url_map.iter_rules()
        if not rule.websocket
        for method in rule.methods or ()
    }
    rows = {route: row[1] for route, row in MATRIX.items()}
    rows.update({route: row[2] for route, row in LIVE_MATRIX.items() if row[0] == "sse"})
    never_forbidden = set()
    for (path, method), expected in rows.items():
        statuses = {status for cell in expected.values() for status in cell}
        documented = getattr(views[path, method], QUART_SCHEMA_RESPONSE_ATTRIBUTE, {})
        assert statuses & {401, 403, 404} <= documented.keys(), (method, path)
        if 401 in statuses and 403 not in statuses:
            assert 403 not in documented, (method, path)
            never_forbidden.add(path)
    assert never_forbidden == NEVER_FORBIDDEN


async def test_websocket_routes_are_documented_but_are_not_operations(
    app: Quart, client: TestClientProtocol
) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    sockets = api_views(app, websocket=True)
    assert sorted(path for path, _, _ in sockets) == ["/live", "/sessions/<uuid:session_id>/live"]
    for path, view, tags in sockets:
        assert (view.__doc__ or "").strip(), f"{path}: docstring"
        assert tags, f"{path}: tag"
        assert openapi_path(path) not in spec["paths"], path


@pytest.mark.parametrize(
    ("settings_overrides", "anonymous_allowed"),
    [({}, True), (AUTH_REQUIRED, False)],
    ids=["auth-off", "auth-required"],
)
async def test_the_spec_describes_the_bearer_scheme(
    client: TestClientProtocol, anonymous_allowed: bool
) -> None:
    for _ in range(2):  # building the document twice gives the same document
        spec = await (await client.get("/openapi.json")).get_json()
        scheme = spec["components"]["securitySchemes"]["bearer"]
        assert scheme["type"] == "http"
        assert scheme["scheme"] == "bearer"
        for path, operations in spec["paths"].items():
            for operation in operations.values():
                # Live streams also take a ticket (tests/api/test_spec.py).
                ticket = [{"ticket": []}] if path.endswith("/events") else []
                expected = [{"bearer": []}, *ticket] + ([{}] if anonymous_allowed else [])
                if path.startswith("/health"):
                    assert "security" not in operation
                else:
                    assert operation["security"] == expected, path


async def test_operation_ids_are_stable(client: TestClientProtocol) -> None:
    spec = await (await client.get("/openapi.json")).get_json()

    found = {
        (path, method): operation["operationId"]
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    assert found == OPERATION_IDS
