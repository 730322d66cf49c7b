"""The access matrix: every route, every kind of caller, own and foreign objects.

Runs in production mode (``auth.required = true``). Each cell is the exact status a
caller gets; a route added without a row here fails ``test_every_route_is_in_the_matrix``.
Every body is also searched for text its reader must never see. Live streams (SSE and
WebSocket) never end, so their rows are in ``LIVE_MATRIX``, which
``tests/live/test_live_access.py`` runs against a real server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from tests.api.access_world import (
    AUTH_REQUIRED,
    INTERNAL_A,
    SECRET_A,
    SECRET_B,
    SECRET_OTHER_CUSTOMER,
    World,
    build_world,
)

PRINCIPALS = (
    "customer",
    "other_customer",
    "agent",
    "agent_jwt",
    "admin",
    "foreign_agent",
    "service_full",
    "service_read_only",
    "service_write_only",
    "anonymous",
    "expired_jwt",
    "tampered_jwt",
    "tampered_customer_token",
)
UNAUTHENTICATED = {"anonymous": 401, "expired_jwt": 401, "tampered_jwt": 401}
UNAUTHENTICATED["tampered_customer_token"] = 401


def policy(**cells: Any) -> dict[str, tuple[int, int]]:
    """(own, foreign) per principal; a single int means the same for both."""
    table = {
        name: (value, value) if isinstance(value, int) else value for name, value in cells.items()
    }
    table.update({name: (status, status) for name, status in UNAUTHENTICATED.items()})
    assert set(table) == set(PRINCIPALS), set(PRINCIPALS) ^ set(table)
    return table


# Reading a session (own = the customer's session in tenant A, foreign = tenant B's).
READ = policy(
    customer=(200, 404),
    other_customer=404,
    agent=(200, 404),
    agent_jwt=(200, 404),
    admin=(200, 404),
    foreign_agent=(404, 200),
    service_full=(200, 404),
    service_read_only=(200, 404),
    service_write_only=403,
)
POST_MESSAGE = policy(
    customer=(201, 404),
    other_customer=404,
    agent=(201, 404),
    agent_jwt=(201, 404),
    admin=(201, 404),
    foreign_agent=(404, 201),
    service_full=(201, 404),
    service_read_only=403,
    service_write_only=(201, 404),
)
MANAGE_SESSION = policy(
    customer=403,
    other_customer=403,
    agent=(200, 404),
    agent_jwt=(200, 404),
    admin=(200, 404),
    foreign_agent=(404, 200),
    service_full=(200, 404),
    service_read_only=403,
    service_write_only=403,  # the answer shows the session: reading is needed too
)
OPEN_SESSION = policy(
    customer=403,
    other_customer=403,
    agent=201,
    agent_jwt=201,
    admin=201,
    foreign_agent=201,
    service_full=201,
    service_read_only=403,
    service_write_only=201,
)
_NOT_ADMIN = dict.fromkeys(
    (
        "customer",
        "other_customer",
        "agent",
        "agent_jwt",
        "foreign_agent",
        "service_full",
        "service_read_only",
        "service_write_only",
    ),
    403,
)
INBOX = policy(
    customer=403,
    other_customer=403,
    agent=200,
    agent_jwt=200,
    admin=200,
    foreign_agent=200,
    service_full=200,
    service_read_only=200,
    service_write_only=403,
)
MARK_READ = policy(
    customer=(204, 404),
    other_customer=404,
    agent=(204, 404),
    agent_jwt=(204, 404),
    admin=(204, 404),
    foreign_agent=(404, 204),
    service_full=(204, 404),
    service_read_only=(204, 404),
    service_write_only=403,
)
# Typing notices need sessions:write, like posting; nothing is shown back.
TYPING = policy(
    customer=(204, 404),
    other_customer=404,
    agent=(204, 404),
    agent_jwt=(204, 404),
    admin=(204, 404),
    foreign_agent=(404, 204),
    service_full=(204, 404),
    service_read_only=403,
    service_write_only=(204, 404),
)
# Any caller may swap its credential for a live ticket (the stream then checks access).
TICKET = policy(
    customer=201,
    other_customer=201,
    agent=201,
    agent_jwt=201,
    admin=201,
    foreign_agent=201,
    service_full=201,
    service_read_only=201,
    service_write_only=201,
)
# Own: the customer's message; foreign: the foreign agent's. Only authors edit.
EDIT_MESSAGE = policy(
    customer=(200, 404),
    other_customer=404,
    agent=(403, 404),
    agent_jwt=(403, 404),
    admin=(403, 404),
    foreign_agent=(404, 200),
    service_full=(403, 404),
    service_read_only=403,
    service_write_only=(403, 404),
)
# Authors and admins delete.
DELETE_MESSAGE = policy(
    customer=(204, 404),
    other_customer=404,
    agent=(403, 404),
    agent_jwt=(403, 404),
    admin=(204, 404),
    foreign_agent=(404, 204),
    service_full=(403, 404),
    service_read_only=403,
    service_write_only=(403, 404),
)
ADMIN_CREATE = policy(admin=201, **_NOT_ADMIN)
ADMIN_LIST = policy(admin=200, **_NOT_ADMIN)
ADMIN_OBJECT = policy(admin=(200, 404), **_NOT_ADMIN)
ADMIN_DELETE = policy(admin=(204, 404), **_NOT_ADMIN)
PUBLIC = dict.fromkeys(PRINCIPALS, (200, 200))

Request = Callable[[World, bool], tuple[str, str, dict[str, Any] | None]]


def session_path(suffix: str = "") -> Request:
    def build(world: World, own: bool) -> tuple[str, str, dict[str, Any] | None]:
        session = world.own_session if own else world.foreign_session
        return "", f"/sessions/{session}{suffix}", None

    return build


def message_path(world: World, own: bool) -> tuple[str, str, dict[str, Any] | None]:
    session, message = (
        (world.own_session, world.own_message)
        if own
        else (world.foreign_session, world.foreign_message)
    )
    return "", f"/sessions/{session}/messages/{message}", None


def fixed(path: str) -> Request:
    return lambda world, own: ("", path, None)


def agent_path(world: World, own: bool) -> tuple[str, str, dict[str, Any] | None]:
    return "", f"/agents/{world.own_agent if own else world.foreign_agent}", None


def key_path(world: World, own: bool) -> tuple[str, str, dict[str, Any] | None]:
    return "", f"/api-keys/{world.own_key if own else world.foreign_key}", None


def with_body(request: Request, body: dict[str, Any]) -> Request:
    def build(world: World, own: bool) -> tuple[str, str, dict[str, Any] | None]:
        _, path, _ = request(world, own)
        return "", path, body

    return build


# (rule, method) -> (how to build the request, expected statuses)
MATRIX: dict[tuple[str, str], tuple[Request, dict[str, tuple[int, int]]]] = {
    ("/health", "GET"): (fixed("/health"), PUBLIC),
    ("/health/ready", "GET"): (fixed("/health/ready"), PUBLIC),
    ("/openapi.json", "GET"): (fixed("/openapi.json"), PUBLIC),
    ("/docs", "GET"): (fixed("/docs"), PUBLIC),
    ("/redocs", "GET"): (fixed("/redocs"), PUBLIC),
    # Protected by metrics.token or metrics.bind (tests/api/test_metrics.py), not by callers.
    ("/metrics", "GET"): (fixed("/metrics"), PUBLIC),
    ("/sessions", "POST"): (fixed("/sessions"), OPEN_SESSION),
    ("/sessions", "GET"): (fixed("/sessions"), INBOX),
    ("/sessions/<uuid:session_id>/read", "POST"): (
        with_body(session_path("/read"), {"seq": 1}),
        MARK_READ,
    ),
    ("/sessions/<uuid:session_id>/typing", "POST"): (session_path("/typing"), TYPING),
    ("/live/tickets", "POST"): (fixed("/live/tickets"), TICKET),
    ("/sessions/<uuid:session_id>/messages/<uuid:message_id>", "PATCH"): (
        with_body(message_path, {"content": "edited"}),
        EDIT_MESSAGE,
    ),
    ("/sessions/<uuid:session_id>/messages/<uuid:message_id>", "DELETE"): (
        message_path,
        DELETE_MESSAGE,
    ),
    ("/sessions/<uuid:session_id>", "GET"): (session_path(), READ),
    ("/sessions/<uuid:session_id>", "PATCH"): (
        with_body(session_path(), {"priority": "high"}),
        MANAGE_SESSION,
    ),
    ("/sessions/<uuid:session_id>/messages", "POST"): (
        with_body(session_path("/messages"), {"content": "hello"}),
        POST_MESSAGE,
    ),
    ("/sessions/<uuid:session_id>/messages", "GET"): (session_path("/messages"), READ),
    ("/sessions/<uuid:session_id>/messages/<uuid:message_id>", "GET"): (message_path, READ),
    ("/agents", "POST"): (with_body(fixed("/agents"), {"name": "New"}), ADMIN_CREATE),
    ("/agents", "GET"): (fixed("/agents"), ADMIN_LIST),
    ("/agents/<uuid:agent_id>", "GET"): (agent_path, ADMIN_OBJECT),
    ("/agents/<uuid:agent_id>", "PATCH"): (with_body(agent_path, {"name": "Al"}), ADMIN_OBJECT),
    ("/api-keys", "POST"): (
        with_body(fixed("/api-keys"), {"name": "ci", "scopes": ["sessions:read"]}),
        ADMIN_CREATE,
    ),
    ("/api-keys", "GET"): (fixed("/api-keys"), ADMIN_LIST),
    ("/api-keys/<uuid:key_id>", "GET"): (key_path, ADMIN_OBJECT),
    ("/api-keys/<uuid:key_id>", "DELETE"): (key_path, ADMIN_DELETE),
}
# (rule, method) -> (transport, how to build the request, expected statuses). Quart lists
# a WebSocket rule as GET; a refused WebSocket closes with 4000 + the status.
LIVE_MATRIX: dict[tuple[str, str], tuple[str, Request, dict[str, tuple[int, int]]]] = {
    ("/sessions/<uuid:session_id>/events", "GET"): ("sse", session_path("/events"), READ),
    ("/sessions/<uuid:session_id>/live", "GET"): ("ws", session_path("/live"), READ),
    # The tenant's stream is the inbox, live: support side only, always the own tenant.
    ("/events", "GET"): ("sse", fixed("/events"), INBOX),
    ("/live", "GET"): ("ws", fixed("/live"), INBOX),
}


def forbidden_text(world: World, principal: str, path: str) -> list[str]:
    """What ``principal`` must never find in a body (ids it sent in the path aside)."""
    if principal == "foreign_agent":
        markers = [SECRET_A, SECRET_OTHER_CUSTOMER, INTERNAL_A]
        markers += [world.own_session, world.other_session, world.own_message, world.own_agent]
    else:
        markers = [SECRET_B, world.foreign_session, world.foreign_message, world.foreign_agent]
        if principal == "customer":
            markers += [SECRET_OTHER_CUSTOMER, INTERNAL_A, world.other_session]
        if principal == "other_customer":
            markers += [SECRET_A, INTERNAL_A, world.own_session, world.own_message]
    return [marker for marker in markers if marker not in path]


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return AUTH_REQUIRED


def test_every_route_is_in_the_matrix(app: Quart) -> None:
    routes = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    websockets = {(rule.rule, "GET") for rule in app.url_map.iter_rules() if rule.websocket}
    assert not set(MATRIX) & set(LIVE_MATRIX)
    assert routes == set(MATRIX) | set(LIVE_MATRIX), (
        "add each new route to MATRIX or LIVE_MATRIX (and remove gone ones)"
    )
    assert {route for route, row in LIVE_MATRIX.items() if row[0] == "ws"} == websockets


@pytest.mark.parametrize("route", list(MATRIX), ids=lambda route: f"{route[1]} {route[0]}")
async def test_access_matrix(
    app: Quart, client: TestClientProtocol, route: tuple[str, str]
) -> None:
    world = await build_world(app, client)
    build, expected = MATRIX[route]
    method = route[1]
    failures = []
    for principal in PRINCIPALS:
        for own in (True, False):
            _, path, body = build(world, own)
            options: dict[str, Any] = {} if body is None else {"json": body}
            response = await client.open(
                path, method=method, headers=world.headers[principal], **options
            )
            want = expected[principal][0 if own else 1]
            text = await response.get_data(as_text=True)
            if response.status_code != want:
                failures.append(
                    f"{principal} {'own' if own else 'foreign'}: "
                    f"{response.status_code}, expected {want}: {text[:200]}"
                )
            leaked = [marker for marker in forbidden_text(world, principal, path) if marker in text]
            if leaked:
                failures.append(f"{principal} {'own' if own else 'foreign'}: body has {leaked}")
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            if response.status_code >= 400:
                assert response.mimetype == "application/problem+json", (principal, text)
            if response.status_code == 204:
                assert not text
    assert not failures, "\n".join(failures)
