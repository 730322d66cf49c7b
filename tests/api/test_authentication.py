"""Authentication through the HTTP API: credentials, what they stand for, and when they stop.

Runs in production mode (``auth.required = true``) with agents' JWTs checked against a real
local identity provider (``tests/jwks_server.py``) whose RS256 and ES256 keys rotate. State
is made with the tenants, agents and api_keys services (as the CLI does) and through the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from quart import Quart
from quart.testing.connections import WebsocketDisconnectError
from quart.typing import TestClientProtocol
from sqlalchemy import Table, select

from chat_service.errors import InvalidField
from chat_service.model import ApiKey, ChatSession, Message, Role
from chat_service.routes.state import app_state
from chat_service.services import agents, api_keys, tenants
from chat_service.services.access import Scope
from tests.api.access_world import CURSOR_SECRET, agent_jwt, bearer
from tests.factories import problem_of
from tests.jwks_server import JwksServer

CHALLENGE = 'Bearer realm="chat-service"'
INVALID_TOKEN = 'Bearer realm="chat-service", error="invalid_token"'
AUDIENCE = "chat-service-tests"
NO_CREDENTIAL = "this request needs a credential: Authorization: Bearer ..."
NOT_BEARER = "send the credential as Authorization: Bearer <token>"
SESSIONS = cast(Table, ChatSession.__table__)
MESSAGES = cast(Table, Message.__table__)
API_KEYS = cast(Table, ApiKey.__table__)
SOME_ID = "0190a8c4-1e2b-7c3d-8e4f-5a6b7c8d9e0f"
# Routes anyone may call.
PUBLIC_RULES = {
    "/health",
    "/health/ready",
    "/openapi.json",
    "/docs",
    "/redocs",
    "/static/<path:filename>",
    "/metrics",  # no API credential: metrics.token protects it (tests/api/test_metrics.py)
}


# -- settings: production mode, JWTs from the local identity provider --------------------------


@dataclass(frozen=True)
class Idp:
    """The identity provider and the two keys most tests sign with."""

    server: JwksServer
    rs256: str
    es256: str

    def token(
        self,
        tenant: str,
        subject: str,
        role: str = "agent",
        /,
        *,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A valid token of ``subject`` (``claims`` override or, set to None, drop claims)."""
        payload: dict[str, Any] = {
            "iss": self.server.origin,
            "aud": AUDIENCE,
            "tenant": tenant,
            "role": role,
            "sub": subject,
            "exp": int(time.time()) + 600,
        }
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        return self.server.sign(payload, kid or self.rs256)


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    with JwksServer() as server:
        yield Idp(server, server.add_key("RS256"), server.add_key("ES256"))


@pytest.fixture
def auth_required() -> bool:
    return True


@pytest.fixture
def jwks_cache_seconds() -> float:
    return 300.0


@pytest.fixture
def settings_overrides(
    idp: Idp, auth_required: bool, jwks_cache_seconds: float
) -> dict[str, dict[str, Any]]:
    return {
        "auth": {
            "required": auth_required,
            "jwt_algorithms": ["RS256", "ES256"],
            "jwt_jwks_url": idp.server.url,
            "jwt_issuer": idp.server.origin,
            "jwt_audience": AUDIENCE,
            "jwks_min_refresh_seconds": 0,
            "jwks_cache_seconds": jwks_cache_seconds,
        },
        "security": {"cursor_secret": CURSOR_SECRET},
    }


# -- helpers -----------------------------------------------------------------------------------


@dataclass
class Tenant:
    """A tenant with an admin (personal key), an agent (personal key) and a service key."""

    id: uuid.UUID
    slug: str
    admin_id: str
    admin_key: str
    agent_id: str
    agent_key: str
    service_id: str
    service_key: str


async def make_tenant(app: Quart, slug: str) -> Tenant:
    db = app_state(app).db
    tenant = await tenants.create_tenant(db, slug=slug, name=slug.title())

    async def personal(role: Role, name: str) -> tuple[str, str]:
        agent = await agents.add_agent(db, tenant.id, name=name, email=None, role=role)
        key = await api_keys.add_api_key(
            db, tenant.id, name=name, scopes=api_keys.role_scopes(role), agent_id=agent.id
        )
        assert key.key is not None
        return str(agent.id), key.key

    admin_id, admin_key = await personal(Role.ADMIN, f"{slug} admin")
    agent_id, agent_key = await personal(Role.AGENT, f"{slug} agent")
    service = await api_keys.add_api_key(
        db,
        tenant.id,
        name="service",
        scopes=[Scope.SESSIONS_READ, Scope.SESSIONS_WRITE],
        agent_id=None,
    )
    assert service.key is not None
    return Tenant(
        tenant.id, slug, admin_id, admin_key, agent_id, agent_key, str(service.id), service.key
    )


async def open_session(client: TestClientProtocol, token: str) -> tuple[str, str]:
    """A new session opened with ``token``: its id and its customer token."""
    response = await client.post("/sessions", headers=bearer(token))
    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    assert body["customer_token"].startswith("cst_")
    return body["id"], body["customer_token"]


async def post(
    client: TestClientProtocol, session: str, token: str, **body: Any
) -> tuple[int, Any]:
    response = await client.post(
        f"/sessions/{session}/messages",
        json=body,
        headers={**bearer(token), "Prefer": "return=minimal"},
    )
    return response.status_code, await response.get_json(force=True)


async def messages_of(client: TestClientProtocol, session: str, token: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session}/messages", headers=bearer(token))
    assert response.status_code == 200, await response.get_data(as_text=True)
    items: list[dict[str, Any]] = (await response.get_json())["items"]
    return items


async def status_of(
    client: TestClientProtocol, path: str, token: str, method: str = "GET", **options: Any
) -> int:
    response = await client.open(path, method=method, headers=bearer(token), **options)
    return response.status_code


async def unauthenticated(response: Any, challenge: str = INVALID_TOKEN) -> str:
    """Assert a 401 problem with ``challenge``; return its detail."""
    body = await problem_of(response, 401)
    assert response.headers["WWW-Authenticate"] == challenge
    assert body["type"] == "urn:chat-service:problem:unauthenticated"
    assert body["title"] == "Authentication required"
    detail: str = body["detail"]
    return detail


async def agents_by_subject(
    client: TestClientProtocol, admin_key: str, subject: str
) -> list[dict[str, Any]]:
    response = await client.get("/agents", headers=bearer(admin_key))
    assert response.status_code == 200, await response.get_data(as_text=True)
    items = (await response.get_json())["items"]
    return [item for item in items if item["external_subject"] == subject]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- 1. no credential, bad credentials ---------------------------------------------------------


async def test_a_request_without_credential_gets_401_with_a_bearer_challenge(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)
    [message] = await messages_of(client, session, acme.service_key)
    ids = {
        "<uuid:session_id>": session,
        "<uuid:message_id>": message["id"],
        "<uuid:agent_id>": acme.admin_id,
        "<uuid:key_id>": acme.service_id,
    }

    def path_of(rule: str) -> str:
        for placeholder, value in ids.items():
            rule = rule.replace(placeholder, value)
        return rule

    rules = [rule for rule in app.url_map.iter_rules() if rule.rule not in PUBLIC_RULES]
    # SSE streams are plain GETs (refused before the stream starts); WebSockets are not.
    requests = [
        (method, rule.rule)
        for rule in rules
        if not rule.websocket
        for method in sorted(rule.methods or ())
        if method not in {"HEAD", "OPTIONS"}
    ]
    sockets = [rule.rule for rule in rules if rule.websocket]
    assert ("POST", "/sessions") in requests
    assert {("GET", "/events"), ("GET", "/sessions/<uuid:session_id>/events")} <= set(requests)
    assert len(requests) >= 17
    assert sorted(sockets) == ["/live", "/sessions/<uuid:session_id>/live"]
    for method, rule in [*requests, ("GET", f"/sessions/{SOME_ID}")]:
        path = path_of(rule)
        # A body that is not even valid: the credential is checked first.
        options: dict[str, Any] = {"json": {}} if method in {"POST", "PATCH"} else {}
        response = await client.open(path, method=method, **options)
        assert await unauthenticated(response, CHALLENGE) == NO_CREDENTIAL, (method, path)
    for rule in sockets:
        # A refused WebSocket closes with 4000 + the status an HTTP request would get.
        async with client.websocket(path_of(rule)) as socket:
            with pytest.raises(WebsocketDisconnectError) as closed:
                await socket.receive()
        assert closed.value.args == (4401,), rule

    # Nothing changed.
    assert await status_of(client, f"/sessions/{session}", acme.service_key) == 200
    assert len(await messages_of(client, session, acme.service_key)) == 1
    assert await status_of(client, "/agents", acme.admin_key) == 200


async def test_bad_credentials_get_401_invalid_token(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    session, customer = await open_session(client, acme.service_key)
    cases = {
        # An unknown key or token of the right shape.
        f"Bearer csk_{'A' * 43}": "the API key is not valid or has been revoked",
        f"Bearer cst_{'A' * 43}": "the customer token is not valid",
        # One character off.
        "Bearer " + customer[:-1] + ("x" if customer[-1] != "x" else "y"): (
            "the customer token is not valid"
        ),
        "Bearer " + acme.admin_key[:-1] + ("x" if acme.admin_key[-1] != "x" else "y"): (
            "the API key is not valid or has been revoked"
        ),
        # Not a token this service issues, nor a JWT.
        "Bearer hello": "the bearer token is not a token this service issued",
        # A JWT-shaped value that is not a JWT.
        "Bearer aaa.bbb.ccc": "token is malformed",
        # A valid credential under another scheme, or no token at all.
        f"Basic {customer}": NOT_BEARER,
        "Basic dXNlcjpwYXNzd29yZA==": NOT_BEARER,
        f"Token {acme.admin_key}": NOT_BEARER,
        "Bearer": NOT_BEARER,
        "Bearer    ": NOT_BEARER,
        "": NOT_BEARER,
    }
    for header, detail in cases.items():
        response = await client.get(f"/sessions/{session}", headers={"Authorization": header})
        assert await unauthenticated(response) == detail, header

    # The real token still works (the refusals were about the credential, not the session),
    # and the scheme's name is case-insensitive (RFC 9110).
    for header in (f"Bearer {customer}", f"bearer {customer}", f"BEARER  {customer} "):
        response = await client.get(f"/sessions/{session}", headers={"Authorization": header})
        assert response.status_code == 200, header


async def test_health_needs_no_credential(client: TestClientProtocol) -> None:
    for headers in ({}, bearer("csk_not-a-key")):
        response = await client.get("/health", headers=headers)
        assert response.status_code == 200
        assert await response.get_json() == {"status": "ok"}


@pytest.mark.parametrize("auth_required", [False])
async def test_without_required_auth_no_credential_is_the_open_api_but_a_bad_one_is_401(
    app: Quart, client: TestClientProtocol
) -> None:
    response = await client.post("/sessions")
    assert response.status_code == 201, await response.get_data(as_text=True)
    session = (await response.get_json())["id"]
    response = await client.post(
        f"/sessions/{session}/messages", json={"content": "hi", "author_type": "customer"}
    )
    assert response.status_code == 201, await response.get_data(as_text=True)

    # A credential that is sent is always checked.
    response = await client.get(f"/sessions/{session}", headers=bearer(f"csk_{'A' * 43}"))
    assert (
        await unauthenticated(response, INVALID_TOKEN)
        == "the API key is not valid or has been revoked"
    )
    # The open API is not an admin.
    assert (await client.get("/agents")).status_code == 403


# -- 2. customer tokens and authors ------------------------------------------------------------


async def test_a_customer_token_reads_and_writes_its_own_session_only(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    own, customer = await open_session(client, acme.service_key)
    other, _ = await open_session(client, acme.service_key)

    assert await status_of(client, f"/sessions/{own}", customer) == 200
    status, message = await post(client, own, customer, content="my order is late")
    assert status == 201, message

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/sessions/{other}", {}),
        ("GET", f"/sessions/{other}/messages", {}),
        ("POST", f"/sessions/{other}/messages", {"json": {"content": "hi"}}),
    ]
    for method, path, options in requests:
        response = await client.open(path, method=method, headers=bearer(customer), **options)
        body = await problem_of(response, 404)
        assert body["detail"] == f"session {other} does not exist"
    # Customers cannot open sessions or manage cases.
    assert await status_of(client, "/sessions", customer, "POST") == 403
    response = await client.patch(
        f"/sessions/{own}", json={"priority": "high"}, headers=bearer(customer)
    )
    assert (await problem_of(response, 403))["detail"] == "customers cannot do this"
    # Nothing reached the other session.
    assert [m["seq"] for m in await messages_of(client, other, acme.service_key)] == [1]


async def test_a_customer_cannot_write_as_an_agent(app: Quart, client: TestClientProtocol) -> None:
    acme = await make_tenant(app, "acme")
    session, customer = await open_session(client, acme.service_key)

    response = await client.post(
        f"/sessions/{session}/messages",
        json={"content": "refund approved", "author_type": "service_agent"},
        headers=bearer(customer),
    )
    body = await problem_of(response, 403)
    assert body["detail"] == "this credential writes as customer, not as service_agent"
    response = await client.post(
        f"/sessions/{session}/messages",
        json={"content": "note to self", "visibility": "internal"},
        headers=bearer(customer),
    )
    await problem_of(response, 403)

    for reader in (customer, acme.agent_key):
        contents = [m["content"] for m in await messages_of(client, session, reader)]
        assert contents == ["Hello, how may I help you?"]


async def test_the_author_comes_from_the_credential(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    acme = await make_tenant(app, "acme")
    session, customer = await open_session(client, acme.service_key)
    sso = idp.token("acme", "sso-erin")

    posts = [
        (customer, {"content": "from the customer"}),
        (customer, {"content": "customer again", "author_type": "customer"}),
        (acme.agent_key, {"content": "from the agent"}),
        (acme.agent_key, {"content": "agent again", "author_type": "service_agent"}),
        (acme.service_key, {"content": "from the service"}),
        (acme.admin_key, {"content": "from the admin"}),
        (sso, {"content": "from the sso agent"}),
    ]
    for token, body in posts:
        status, answer = await post(client, session, token, **body)
        assert status == 201, answer
    [erin] = await agents_by_subject(client, acme.admin_key, "sso-erin")

    stored = [
        (m["content"], m["author_type"], m["author_id"])
        for m in await messages_of(client, session, acme.admin_key)
    ]
    assert stored == [
        ("Hello, how may I help you?", "service_agent", None),
        ("from the customer", "customer", None),
        ("customer again", "customer", None),
        ("from the agent", "service_agent", acme.agent_id),
        ("agent again", "service_agent", acme.agent_id),
        ("from the service", "service_agent", acme.service_id),
        ("from the admin", "service_agent", acme.admin_id),
        ("from the sso agent", "service_agent", erin["id"]),
    ]
    # The customer sees the same authors.
    seen = [
        (m["author_type"], m["author_id"]) for m in await messages_of(client, session, customer)
    ]
    assert seen == [(author, author_id) for _, author, author_id in stored]


async def test_a_customer_token_works_from_another_device(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    session, customer = await open_session(client, acme.service_key)
    status, _ = await post(client, session, customer, content="typed on my phone")
    assert status == 201

    laptop = app.test_client()
    response = await laptop.get(f"/sessions/{session}", headers=bearer(customer))
    assert response.status_code == 200
    body = await response.get_json()
    assert body["id"] == session
    assert "customer_token" not in body
    assert [m["content"] for m in body["messages"]] == [
        "Hello, how may I help you?",
        "typed on my phone",
    ]
    status, _ = await post(laptop, session, customer, content="and on my laptop")
    assert status == 201
    contents = [m["content"] for m in await messages_of(client, session, customer)]
    assert contents[-2:] == ["typed on my phone", "and on my laptop"]


async def test_only_hashes_of_customer_tokens_and_api_keys_are_stored(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    session, customer = await open_session(client, acme.service_key)
    response = await client.post(
        "/api-keys",
        json={"name": "ci", "scopes": ["sessions:read"]},
        headers=bearer(acme.admin_key),
    )
    assert response.status_code == 201
    created = await response.get_json()

    async with app_state(app).db.engine.connect() as connection:
        row = (
            (await connection.execute(select(SESSIONS).where(SESSIONS.c.id == uuid.UUID(session))))
            .mappings()
            .one()
        )
        key_row = (
            (
                await connection.execute(
                    select(API_KEYS).where(API_KEYS.c.id == uuid.UUID(created["id"]))
                )
            )
            .mappings()
            .one()
        )
        every_row = [
            *(await connection.execute(select(SESSIONS))).all(),
            *(await connection.execute(select(MESSAGES))).all(),
            *(await connection.execute(select(API_KEYS))).all(),
        ]

    assert row["customer_token_hash"] == sha256(customer)
    assert key_row["key_hash"] == sha256(created["key"])
    assert key_row["prefix"] == created["key"][:12]
    dump = repr(every_row)
    for secret in (customer, created["key"], acme.admin_key, acme.service_key):
        assert secret not in dump
        # Not even the part after the kept prefix.
        assert secret[12:] not in dump


# -- 3. API keys -------------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_at_once(app: Quart, client: TestClientProtocol) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)
    response = await client.post(
        "/api-keys",
        json={"name": "reporting", "scopes": ["sessions:read"]},
        headers=bearer(acme.admin_key),
    )
    assert response.status_code == 201
    created = await response.get_json()
    assert await status_of(client, f"/sessions/{session}", created["key"]) == 200

    response = await client.delete(f"/api-keys/{created['id']}", headers=bearer(acme.admin_key))
    assert response.status_code == 204

    response = await client.get(f"/sessions/{session}", headers=bearer(created["key"]))
    assert await unauthenticated(response) == "the API key is not valid or has been revoked"
    response = await client.get("/api-keys", headers=bearer(acme.admin_key))
    [listed] = [k for k in (await response.get_json())["items"] if k["id"] == created["id"]]
    assert listed["revoked_at"] is not None
    # Revoking again changes nothing; the other keys still work.
    response = await client.delete(f"/api-keys/{created['id']}", headers=bearer(acme.admin_key))
    assert response.status_code == 204
    assert await status_of(client, f"/sessions/{session}", acme.service_key) == 200


async def test_a_deactivated_agent_is_refused_with_its_key(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)
    assert await status_of(client, f"/sessions/{session}", acme.agent_key) == 200

    response = await client.patch(
        f"/agents/{acme.agent_id}", json={"active": False}, headers=bearer(acme.admin_key)
    )
    assert response.status_code == 200
    assert (await response.get_json())["active"] is False

    response = await client.get(f"/sessions/{session}", headers=bearer(acme.agent_key))
    assert await unauthenticated(response) == "the agent of this API key is deactivated"
    response = await client.post(
        f"/sessions/{session}/messages", json={"content": "hi"}, headers=bearer(acme.agent_key)
    )
    await unauthenticated(response)

    response = await client.patch(
        f"/agents/{acme.agent_id}", json={"active": True}, headers=bearer(acme.admin_key)
    )
    assert response.status_code == 200
    assert await status_of(client, f"/sessions/{session}", acme.agent_key) == 200


async def test_an_admin_cannot_deactivate_or_demote_itself(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    path = f"/agents/{acme.admin_id}"
    for change in ({"active": False}, {"role": "agent"}, {"role": "agent", "active": True}):
        response = await client.patch(path, json=change, headers=bearer(acme.admin_key))
        body = await problem_of(response, 409)
        assert body["detail"] == "admins cannot deactivate or demote themselves", change

    response = await client.get(path, headers=bearer(acme.admin_key))
    assert response.status_code == 200
    body = await response.get_json()
    assert (body["role"], body["active"]) == ("admin", True)
    # Harmless changes to oneself are fine.
    response = await client.patch(
        path,
        json={"name": "Ada L.", "role": "admin", "active": True},
        headers=bearer(acme.admin_key),
    )
    assert response.status_code == 200
    assert (await response.get_json())["name"] == "Ada L."
    # Another admin may demote this one.
    response = await client.post(
        "/agents", json={"name": "Grace", "role": "admin"}, headers=bearer(acme.admin_key)
    )
    grace = (await response.get_json())["id"]
    response = await client.post(
        "/api-keys",
        json={
            "name": "grace",
            "scopes": ["admin", "sessions:read", "sessions:write"],
            "agent_id": grace,
        },
        headers=bearer(acme.admin_key),
    )
    grace_key = (await response.get_json())["key"]
    response = await client.patch(path, json={"role": "agent"}, headers=bearer(grace_key))
    assert response.status_code == 200
    assert await status_of(client, "/agents", acme.admin_key) == 403


async def test_an_api_key_is_shown_once(app: Quart, client: TestClientProtocol) -> None:
    acme = await make_tenant(app, "acme")
    response = await client.post(
        "/api-keys",
        json={"name": "ci", "scopes": ["sessions:write", "sessions:read"]},
        headers=bearer(acme.admin_key),
    )
    assert response.status_code == 201
    created = await response.get_json()
    assert response.headers["Location"] == f"/api-keys/{created['id']}"
    key = created["key"]
    assert key.startswith("csk_")
    assert len(key) > 40
    assert created["prefix"] == key[:12]
    assert created["scopes"] == ["sessions:read", "sessions:write"]
    assert created["agent_id"] is None
    assert created["revoked_at"] is None

    response = await client.get("/api-keys", headers=bearer(acme.admin_key))
    assert response.status_code == 200
    text = await response.get_data(as_text=True)
    assert key not in text
    items = (await response.get_json())["items"]
    [listed] = [item for item in items if item["id"] == created["id"]]
    assert listed == {name: value for name, value in created.items() if name != "key"}
    assert all("key" not in item for item in items)
    # The key works although it is not shown any more.
    session, _ = await open_session(client, key)
    assert await status_of(client, f"/sessions/{session}", key) == 200


async def test_a_personal_key_is_bounded_by_its_agents_role(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)
    response = await client.post(
        "/api-keys",
        json={"name": "alice", "scopes": ["admin", "sessions:read"], "agent_id": acme.agent_id},
        headers=bearer(acme.admin_key),
    )
    assert response.status_code == 201
    created = await response.get_json()
    assert (created["agent_id"], created["scopes"]) == (acme.agent_id, ["admin", "sessions:read"])
    key = created["key"]

    for path in ("/agents", "/api-keys"):
        response = await client.get(path, headers=bearer(key))
        assert (await problem_of(response, 403))[
            "detail"
        ] == "this credential lacks the admin scope"
    response = await client.post(
        "/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=bearer(key)
    )
    await problem_of(response, 403)
    assert await status_of(client, f"/sessions/{session}", key) == 200
    # The key never had sessions:write.
    status, _ = await post(client, session, key, content="hi")
    assert status == 403

    # Once the agent is an admin, the same key is one.
    response = await client.patch(
        f"/agents/{acme.agent_id}", json={"role": "admin"}, headers=bearer(acme.admin_key)
    )
    assert response.status_code == 200
    assert await status_of(client, "/agents", key) == 200


async def test_a_key_for_another_tenants_agent_is_refused(
    app: Quart, client: TestClientProtocol
) -> None:
    acme = await make_tenant(app, "acme")
    globex = await make_tenant(app, "globex")
    for agent_id in (globex.agent_id, globex.admin_id, str(uuid.uuid4())):
        response = await client.post(
            "/api-keys",
            json={"name": "steal", "scopes": ["sessions:read"], "agent_id": agent_id},
            headers=bearer(acme.admin_key),
        )
        body = await problem_of(response, 422)
        assert body["errors"] == [
            {"detail": "not an agent of this tenant", "pointer": "#/agent_id"}
        ]

    response = await client.get("/api-keys", headers=bearer(acme.admin_key))
    assert [k["name"] for k in (await response.get_json())["items"]] == [
        "acme admin",
        "acme agent",
        "service",
    ]


# -- 4. JWTs from the identity provider's JWKS -------------------------------------------------


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_a_new_jwt_subject_becomes_an_agent_on_first_sight(
    app: Quart, client: TestClientProtocol, idp: Idp, kind: str
) -> None:
    acme = await make_tenant(app, "acme")
    subject = f"sso-{kind.lower()}-dana"
    token = idp.token("acme", subject, kid=idp.rs256 if kind == "RS256" else idp.es256)
    assert await agents_by_subject(client, acme.admin_key, subject) == []

    session, _ = await open_session(client, token)
    status, message = await post(client, session, token, content="hello from dana")
    assert status == 201, message

    [dana] = await agents_by_subject(client, acme.admin_key, subject)
    assert dana["role"] == "agent"
    assert dana["name"] == subject
    assert dana["active"] is True
    assert message["author_type"] == "service_agent"
    assert message["author_id"] == dana["id"]
    # Later requests are the same agent (no second row).
    assert await status_of(client, f"/sessions/{session}", token) == 200
    assert [a["id"] for a in await agents_by_subject(client, acme.admin_key, subject)] == [
        dana["id"]
    ]


async def test_a_rotated_key_is_accepted_at_once(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    """A token signed with a key the service has not seen yet refetches the JWKS."""
    await make_tenant(app, "acme")
    old = idp.server.add_key("RS256")
    assert await status_of(client, "/agents", idp.token("acme", "sso-rot", "admin", kid=old)) == 200

    new = idp.server.add_key("ES256")
    fetches = idp.server.fetches
    assert await status_of(client, "/agents", idp.token("acme", "sso-rot", "admin", kid=new)) == 200
    assert idp.server.fetches == fetches + 1
    assert await status_of(client, "/agents", idp.token("acme", "sso-rot", "admin", kid=old)) == 200

    # A key the identity provider never published is not accepted.
    rogue = idp.server.add_key("RS256", published=False)
    response = await client.get("/agents", headers=bearer(idp.token("acme", "x", kid=rogue)))
    assert await unauthenticated(response) == "token is signed with an unknown key id"


@pytest.mark.parametrize("jwks_cache_seconds", [0.1])
async def test_a_removed_key_is_refused_once_the_key_set_is_fetched_again(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    await make_tenant(app, "acme")
    old = idp.server.add_key("RS256")
    assert await status_of(client, "/agents", idp.token("acme", "sso-rm", "admin", kid=old)) == 200
    new = idp.server.add_key("RS256")
    assert await status_of(client, "/agents", idp.token("acme", "sso-rm", "admin", kid=new)) == 200

    idp.server.remove_key(old)
    await asyncio.sleep(0.15)  # the cached key set expires

    response = await client.get(
        "/agents", headers=bearer(idp.token("acme", "sso-rm", "admin", kid=old))
    )
    assert await unauthenticated(response) == "token is signed with an unknown key id"
    assert await status_of(client, "/agents", idp.token("acme", "sso-rm", "admin", kid=new)) == 200


async def test_jwt_claims_are_checked(app: Quart, client: TestClientProtocol, idp: Idp) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)
    now = int(time.time())
    cases = {
        "wrong audience": (
            idp.token("acme", "sso-x", aud="someone-else"),
            "token audience is not accepted",
        ),
        "no audience": (idp.token("acme", "sso-x", aud=None), "token has no 'aud' claim"),
        "wrong issuer": (
            idp.token("acme", "sso-x", iss="https://evil.example"),
            "token issuer is not accepted",
        ),
        "no issuer": (idp.token("acme", "sso-x", iss=None), "token has no 'iss' claim"),
        "expired": (idp.token("acme", "sso-x", exp=now - 120), "token has expired"),
        "no expiry": (idp.token("acme", "sso-x", exp=None), "token has no 'exp' claim"),
        "not yet valid": (idp.token("acme", "sso-x", nbf=now + 600), "token is not yet valid"),
        "unknown tenant": (idp.token("nope", "sso-x"), "the token's tenant is not known here"),
        "unknown tenant id": (
            idp.token(str(uuid.uuid4()), "sso-x"),
            "the token's tenant is not known here",
        ),
        "unknown role": (
            idp.token("acme", "sso-x", "owner"),
            "the token's role is neither agent nor admin",
        ),
        "no subject": (idp.token("acme", "sso-x", sub=None), "token has no valid 'sub' claim"),
        "no tenant": (idp.token("acme", "sso-x", tenant=None), "token has no valid 'tenant' claim"),
        "HS256 is not accepted here": (
            agent_jwt("acme", "sso-x"),
            "token algorithm is not accepted",
        ),
    }
    failures = []
    for name, (token, detail) in cases.items():
        response = await client.get(f"/sessions/{session}", headers=bearer(token))
        if response.status_code != 401:
            failures.append(f"{name}: {response.status_code}")
            continue
        got = await unauthenticated(response)
        if got != detail:
            failures.append(f"{name}: {got!r}, expected {detail!r}")
    assert not failures, "\n".join(failures)
    # None of them made an agent.
    assert await agents_by_subject(client, acme.admin_key, "sso-x") == []
    assert await status_of(client, f"/sessions/{session}", idp.token("acme", "sso-x")) == 200


async def test_the_role_claim_decides_admin_access_and_updates_the_agent(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    acme = await make_tenant(app, "acme")

    response = await client.get("/agents", headers=bearer(idp.token("acme", "sso-frank", "agent")))
    assert (await problem_of(response, 403))["detail"] == "this credential lacks the admin scope"
    [frank] = await agents_by_subject(client, acme.admin_key, "sso-frank")
    assert frank["role"] == "agent"

    response = await client.get("/agents", headers=bearer(idp.token("acme", "sso-frank", "admin")))
    assert response.status_code == 200
    [listed] = [a for a in (await response.get_json())["items"] if a["id"] == frank["id"]]
    assert listed["role"] == "admin"

    # Demoted at the identity provider: demoted here, at the next request.
    token = idp.token("acme", "sso-frank", "agent")
    assert await status_of(client, "/api-keys", token) == 403
    [again] = await agents_by_subject(client, acme.admin_key, "sso-frank")
    assert (again["id"], again["role"]) == (frank["id"], "agent")


async def test_the_tenant_claim_may_be_the_slug_or_the_id(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)

    by_slug = idp.token("acme", "sso-gina", kid=idp.es256)
    by_id = idp.token(str(acme.id), "sso-gina", kid=idp.es256)
    for token in (by_slug, by_id):
        assert await status_of(client, f"/sessions/{session}", token) == 200
    status, message = await post(client, session, by_id, content="via id")
    assert status == 201
    [gina] = await agents_by_subject(client, acme.admin_key, "sso-gina")
    assert message["author_id"] == gina["id"]


async def test_a_jwt_of_another_tenant_cannot_reach_the_session(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    acme = await make_tenant(app, "acme")
    globex = await make_tenant(app, "globex")
    session, _ = await open_session(client, acme.service_key)
    for role in ("agent", "admin"):
        token = idp.token("globex", "sso-hank", role)
        response = await client.get(f"/sessions/{session}", headers=bearer(token))
        assert (await problem_of(response, 404))["detail"] == f"session {session} does not exist"
        status, _ = await post(client, session, token, content="hi")
        assert status == 404
    # The same subject in tenant A is another agent, which may.
    assert await status_of(client, f"/sessions/{session}", idp.token("acme", "sso-hank")) == 200
    [in_globex] = await agents_by_subject(client, globex.admin_key, "sso-hank")
    [in_acme] = await agents_by_subject(client, acme.admin_key, "sso-hank")
    assert in_globex["id"] != in_acme["id"]
    # Tenant B's own sessions are fine.
    own, _ = await open_session(client, idp.token("globex", "sso-hank"))
    assert await status_of(client, f"/sessions/{own}", idp.token("globex", "sso-hank")) == 200


async def test_a_deactivated_jwt_agent_is_refused(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    acme = await make_tenant(app, "acme")
    token = idp.token("acme", "sso-ivy")
    session, _ = await open_session(client, token)
    [ivy] = await agents_by_subject(client, acme.admin_key, "sso-ivy")

    response = await client.patch(
        f"/agents/{ivy['id']}", json={"active": False}, headers=bearer(acme.admin_key)
    )
    assert response.status_code == 200

    response = await client.get(f"/sessions/{session}", headers=bearer(token))
    assert await unauthenticated(response) == "this agent is deactivated"
    # A fresh token does not bring the agent back, whatever role it claims.
    for role in ("agent", "admin"):
        response = await client.get(
            f"/sessions/{session}", headers=bearer(idp.token("acme", "sso-ivy", role))
        )
        await unauthenticated(response)


async def test_a_refused_token_of_a_deactivated_agent_changes_nothing(
    app: Quart, client: TestClientProtocol, idp: Idp
) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, idp.token("acme", "sso-jack"))
    [jack] = await agents_by_subject(client, acme.admin_key, "sso-jack")
    response = await client.patch(
        f"/agents/{jack['id']}", json={"active": False}, headers=bearer(acme.admin_key)
    )
    assert response.status_code == 200

    response = await client.get(
        f"/sessions/{session}", headers=bearer(idp.token("acme", "sso-jack", "admin"))
    )
    await unauthenticated(response)

    [after] = await agents_by_subject(client, acme.admin_key, "sso-jack")
    assert (after["role"], after["active"]) == ("agent", False)


@pytest.mark.parametrize(
    "claims",
    [{"sub": "s" * 256}, {"sub": "nul\x00in-sub"}, {"tenant": "ac\x00me"}],
    ids=["sub-over-255-chars", "nul-in-sub", "nul-in-tenant"],
)
async def test_claims_the_database_cannot_hold_answer_401_on_both_databases(
    app: Quart, client: TestClientProtocol, idp: Idp, claims: dict[str, str]
) -> None:
    acme = await make_tenant(app, "acme")
    session, _ = await open_session(client, acme.service_key)

    token = idp.token("acme", "sso-odd", **claims)
    response = await client.get(f"/sessions/{session}", headers=bearer(token))

    assert "claim is not usable here" in await unauthenticated(response)


async def test_a_tenant_slug_cannot_look_like_a_tenant_id(app: Quart) -> None:
    """A JWT's tenant claim is an id or a slug: a slug in the form of an id is refused."""
    acme = await make_tenant(app, "acme")
    with pytest.raises(InvalidField):
        await tenants.create_tenant(app_state(app).db, slug=str(acme.id), name="impostor")
