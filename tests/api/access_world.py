"""Two tenants with every kind of caller, built through the services and the API.

Tenant A ("acme") has two customers' sessions, an agent, an admin, service keys with
different scopes and an agent who signs in with a JWT; tenant B ("globex") has an
agent and a session of its own. Marker strings in messages let tests check that no
body ever carries what its reader must not see.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from quart import Quart
from quart.typing import TestClientProtocol

from chat_service.model import Role
from chat_service.routes.state import app_state
from chat_service.services import agents, api_keys, tenants
from chat_service.services.access import Scope

JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
CURSOR_SECRET = "test-cursor-secret-0123456789abcdef012345"
# Production mode, with HS256 JWTs for agents.
AUTH_REQUIRED = {
    "auth": {"required": True, "jwt_algorithms": ["HS256"], "jwt_secret": JWT_SECRET},
    "security": {"cursor_secret": CURSOR_SECRET},
}
SECRET_A = "SECRET-A-customer-text"
SECRET_B = "SECRET-B-other-tenant-text"
SECRET_OTHER_CUSTOMER = "SECRET-C2-other-customer-text"
INTERNAL_A = "INTERNAL-A-agents-only-note"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def agent_jwt(tenant: str, subject: str, role: str = "agent", **claims: Any) -> str:
    payload = {"tenant": tenant, "role": role, "sub": subject, "exp": int(time.time()) + 600}
    payload.update(claims)
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def tampered(token: str) -> str:
    """``token`` with one character of its payload changed (the signature no longer fits)."""
    head, payload, signature = token.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    return f"{head}.{payload[:middle]}{flipped}{payload[middle + 1 :]}.{signature}"


@dataclass
class World:
    """Ids and credentials of everything the access tests use."""

    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    own_session: str = ""
    other_session: str = ""
    foreign_session: str = ""
    own_message: str = ""  # the customer's message in own_session
    foreign_message: str = ""  # the foreign agent's message in foreign_session
    own_agent: str = ""
    foreign_agent: str = ""
    own_key: str = ""
    foreign_key: str = ""


async def build_world(app: Quart, client: TestClientProtocol) -> World:
    db = app_state(app).db
    world = World()
    acme = await tenants.create_tenant(db, slug="acme", name="ACME")
    globex = await tenants.create_tenant(db, slug="globex", name="Globex")

    async def agent_key(tenant: uuid.UUID, role: Role, name: str) -> tuple[str, str]:
        agent = await agents.add_agent(db, tenant, name=name, email=None, role=role)
        key = await api_keys.add_api_key(
            db, tenant, name=name, scopes=api_keys.role_scopes(role), agent_id=agent.id
        )
        assert key.key is not None
        return str(agent.id), key.key

    async def service_key(tenant: uuid.UUID, *scopes: Scope) -> tuple[str, str]:
        key = await api_keys.add_api_key(db, tenant, name="service", scopes=scopes, agent_id=None)
        assert key.key is not None
        return str(key.id), key.key

    world.own_agent, agent_a = await agent_key(acme.id, Role.AGENT, "Alice")
    _, admin_a = await agent_key(acme.id, Role.ADMIN, "Ada")
    world.foreign_agent, agent_b = await agent_key(globex.id, Role.AGENT, "Bob")
    _, service_full = await service_key(acme.id, Scope.SESSIONS_READ, Scope.SESSIONS_WRITE)
    _, service_read = await service_key(acme.id, Scope.SESSIONS_READ)
    _, service_write = await service_key(acme.id, Scope.SESSIONS_WRITE)
    # Keys that tests may revoke: never used to authenticate.
    world.own_key, _ = await service_key(acme.id, Scope.SESSIONS_READ)
    world.foreign_key, _ = await service_key(globex.id, Scope.SESSIONS_READ)

    async def open_session(key: str, *posts: tuple[str, dict[str, Any]]) -> list[str]:
        """A session opened with ``key``; its customer token and the posted messages' ids."""
        response = await client.post("/sessions", headers=bearer(key))
        assert response.status_code == 201, await response.get_data(as_text=True)
        body = await response.get_json()
        result = [body["id"], body["customer_token"]]
        for token_kind, post in posts:
            token = body["customer_token"] if token_kind == "customer" else key
            answer = await client.post(
                f"/sessions/{body['id']}/messages",
                json=post,
                headers={**bearer(token), "Prefer": "return=minimal"},
            )
            assert answer.status_code == 201, await answer.get_data(as_text=True)
            result.append((await answer.get_json())["id"])
        return result

    world.own_session, customer, world.own_message, _ = await open_session(
        service_full,
        ("customer", {"content": SECRET_A}),
        ("agent", {"content": INTERNAL_A, "visibility": "internal"}),
    )
    world.other_session, other_customer, _ = await open_session(
        service_full, ("customer", {"content": SECRET_OTHER_CUSTOMER})
    )
    world.foreign_session, _, world.foreign_message = await open_session(
        agent_b, ("agent", {"content": SECRET_B})
    )

    expired = agent_jwt("acme", "sso-expired", exp=int(time.time()) - 3600)
    world.headers = {
        "customer": bearer(customer),
        "other_customer": bearer(other_customer),
        "agent": bearer(agent_a),
        "agent_jwt": bearer(agent_jwt("acme", "sso-carol")),
        "admin": bearer(admin_a),
        "foreign_agent": bearer(agent_b),
        "service_full": bearer(service_full),
        "service_read_only": bearer(service_read),
        "service_write_only": bearer(service_write),
        "anonymous": {},
        "expired_jwt": bearer(expired),
        "tampered_jwt": bearer(tampered(agent_jwt("acme", "sso-carol", role="admin"))),
        "tampered_customer_token": bearer(
            customer[:-2] + ("xy" if customer[-2:] != "xy" else "zz")
        ),
    }
    return world
