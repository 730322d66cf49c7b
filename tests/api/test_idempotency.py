"""Idempotency-Key on creates: a retry gets the first answer and writes nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import text

from chat_service.app import create_app
from chat_service.errors import Unavailable
from chat_service.routes.state import app_state
from chat_service.services import api_keys, idempotency, messages
from chat_service.services.access import Scope, local_principal
from tests.api.access_world import AUTH_REQUIRED, bearer, build_world
from tests.factories import create_session, problem_of
from tests.support import load_test_settings


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


async def messages_of(client: TestClientProtocol, session_id: str) -> list[str]:
    response = await client.get(f"/sessions/{session_id}/messages?limit=200")
    assert response.status_code == 200
    return [item["content"] for item in (await response.get_json())["items"]]


async def post_keyed(
    client: TestClientProtocol, session_id: str, key: str, content: str = "Where is it?"
) -> Any:
    return await client.post(
        f"/sessions/{session_id}/messages",
        json={"content": content, "author_type": "customer"},
        headers=keyed(key),
    )


async def session_count(app: Quart) -> int:
    async with app_state(app).db.engine.connect() as connection:
        return int(await connection.scalar(text("SELECT count(*) FROM chat_sessions")) or 0)


async def test_a_retried_message_gets_the_same_answer_and_is_stored_once(
    client: TestClientProtocol,
) -> None:
    session = await create_session(client)
    key = str(uuid.uuid4())

    first = await post_keyed(client, session["id"], key)
    again = await post_keyed(client, session["id"], key)

    assert first.status_code == again.status_code == 201
    assert await again.get_data() == await first.get_data()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await messages_of(client, session["id"]) == [
        "Hello, how may I help you?",
        "Where is it?",
    ]


async def test_the_minimal_answer_is_replayed_as_it_was(client: TestClientProtocol) -> None:
    session = await create_session(client)
    headers = keyed("minimal-1", Prefer="return=minimal")
    body = {"content": "Hi", "author_type": "customer"}
    path = f"/sessions/{session['id']}/messages"

    first = await client.post(path, json=body, headers=headers)
    again = await client.post(path, json=body, headers=headers)

    assert first.status_code == again.status_code == 201
    assert await again.get_json() == await first.get_json()
    assert again.headers["Preference-Applied"] == "return=minimal"


async def test_a_retried_session_replays_its_customer_token_and_opens_one_session(
    app: Quart, client: TestClientProtocol
) -> None:
    first = await client.post("/sessions", headers=keyed("open-1"))
    again = await client.post("/sessions", headers=keyed("open-1"))

    assert first.status_code == again.status_code == 201
    assert (await again.get_json())["customer_token"] == (await first.get_json())["customer_token"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await session_count(app) == 1
    # Replays are kept encrypted: the secret is not in the database in the clear.
    token = (await first.get_json())["customer_token"]
    async with app_state(app).db.engine.connect() as connection:
        stored = (await connection.execute(text("SELECT response FROM idempotency_keys"))).all()
    assert len(stored) == 1
    assert token.encode() not in bytes(stored[0][0])


async def test_the_same_key_with_another_body_or_path_answers_422(
    client: TestClientProtocol,
) -> None:
    session = await create_session(client)
    other = await create_session(client)
    assert (await post_keyed(client, session["id"], "k-1", "first")).status_code == 201

    changed = await post_keyed(client, session["id"], "k-1", "second")
    elsewhere = await post_keyed(client, other["id"], "k-1", "first")

    for response in (changed, elsewhere):
        body = await problem_of(response, 422)
        assert body["type"] == "urn:chat-service:problem:idempotency-key-reused"
    assert await messages_of(client, session["id"]) == ["Hello, how may I help you?", "first"]
    assert await messages_of(client, other["id"]) == ["Hello, how may I help you?"]


async def test_an_equivalent_body_is_the_same_request(client: TestClientProtocol) -> None:
    session = await create_session(client)
    path = f"/sessions/{session['id']}/messages"
    first = await client.post(
        path, json={"content": "x", "author_type": "customer"}, headers=keyed("k")
    )
    # The same fields in another order, with a default spelled out.
    again = await client.post(
        path,
        json={"visibility": "public", "author_type": "customer", "content": "x"},
        headers=keyed("k"),
    )

    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.get_data() == await first.get_data()


@pytest.mark.parametrize("key", ["", "   ", "x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_key_answers_400_and_writes_nothing(
    app: Quart, client: TestClientProtocol, key: str
) -> None:
    response = await client.post("/sessions", headers={"Idempotency-Key": key})

    body = await problem_of(response, 400)
    assert body["type"] == "urn:chat-service:problem:invalid-idempotency-key"
    assert await session_count(app) == 0


async def test_a_key_of_255_characters_is_accepted(client: TestClientProtocol) -> None:
    first = await client.post("/sessions", headers=keyed("k" * 255))
    again = await client.post("/sessions", headers=keyed("k" * 255))

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_twenty_concurrent_requests_with_one_key_write_one_message(
    client: TestClientProtocol,
) -> None:
    session = await create_session(client)

    answers = await asyncio.gather(
        *(post_keyed(client, session["id"], "burst", "only once") for _ in range(20))
    )

    statuses = sorted(response.status_code for response in answers)
    assert set(statuses) <= {201, 409}
    created = [r for r in answers if r.status_code == 201]
    assert len([r for r in created if "Idempotent-Replayed" not in r.headers]) == 1
    bodies = {await r.get_data() for r in created}
    assert len(bodies) == 1
    for response in answers:
        if response.status_code == 409:
            body = await problem_of(response, 409)
            assert body["type"] == "urn:chat-service:problem:idempotency-key-in-use"
            assert 1 <= int(response.headers["Retry-After"]) <= 5
    assert (await messages_of(client, session["id"])).count("only once") == 1


async def test_failed_requests_are_not_kept_so_a_retry_runs_again(
    client: TestClientProtocol,
) -> None:
    missing = uuid.uuid4()
    first = await post_keyed(client, str(missing), "k-404")
    again = await post_keyed(client, str(missing), "k-404")
    await problem_of(first, 404)
    await problem_of(again, 404)
    assert "Idempotent-Replayed" not in again.headers

    # Refused for its body (422), then sent right with the same key: it is created.
    session = await create_session(client)
    path = f"/sessions/{session['id']}/messages"
    refused = await client.post(
        path, json={"content": "", "author_type": "customer"}, headers=keyed("k-fix")
    )
    await problem_of(refused, 422)
    fixed = await post_keyed(client, session["id"], "k-fix", "now with text")
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers


@pytest.mark.parametrize("settings_overrides", [AUTH_REQUIRED])
async def test_keys_belong_to_the_credential_that_sent_them(
    app: Quart, client: TestClientProtocol
) -> None:
    world = await build_world(app, client)
    own = await client.post(
        f"/sessions/{world.own_session}/messages",
        json={"content": "from the customer"},
        headers={**world.headers["customer"], **keyed("shared-key")},
    )
    other = await client.post(
        f"/sessions/{world.other_session}/messages",
        json={"content": "from the other customer"},
        headers={**world.headers["other_customer"], **keyed("shared-key")},
    )
    agent = await client.post(
        f"/sessions/{world.own_session}/messages",
        json={"content": "from the agent"},
        headers={**world.headers["agent"], **keyed("shared-key")},
    )

    assert [r.status_code for r in (own, other, agent)] == [201, 201, 201]
    for response in (other, agent):
        assert "Idempotent-Replayed" not in response.headers
    own_texts = await _texts(client, world.own_session, world.headers["agent"])
    assert own_texts.count("from the customer") == own_texts.count("from the agent") == 1
    other_texts = await _texts(client, world.other_session, world.headers["agent"])
    assert "from the other customer" in other_texts


async def _texts(client: TestClientProtocol, session_id: str, headers: dict[str, str]) -> list[str]:
    response = await client.get(f"/sessions/{session_id}/messages?limit=200", headers=headers)
    assert response.status_code == 200
    return [item["content"] for item in (await response.get_json())["items"]]


@pytest.mark.parametrize("settings_overrides", [AUTH_REQUIRED])
async def test_api_keys_and_tickets_are_replayed_with_their_secret_once_created(
    app: Quart, client: TestClientProtocol
) -> None:
    world = await build_world(app, client)
    admin = world.headers["admin"]
    body = {"name": "deploy bot", "scopes": ["sessions:read"]}

    key = await client.post("/api-keys", json=body, headers={**admin, **keyed("key-1")})
    key_again = await client.post("/api-keys", json=body, headers={**admin, **keyed("key-1")})
    ticket = await client.post("/live/tickets", headers={**admin, **keyed("ticket-1")})
    ticket_again = await client.post("/live/tickets", headers={**admin, **keyed("ticket-1")})
    agent_body = {"name": "Dora", "role": "agent"}
    agent = await client.post("/agents", json=agent_body, headers={**admin, **keyed("agent-1")})
    agent_again = await client.post(
        "/agents", json=agent_body, headers={**admin, **keyed("agent-1")}
    )

    for first, again in ((key, key_again), (ticket, ticket_again), (agent, agent_again)):
        assert first.status_code == again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await again.get_data() == await first.get_data()
    assert ticket_again.headers["Cache-Control"] == "no-store"
    keys = await client.get("/api-keys?limit=200", headers=admin)
    names = [item["name"] for item in (await keys.get_json())["items"]]
    assert names.count("deploy bot") == 1
    agents = await client.get("/agents?limit=200", headers=admin)
    assert [item["name"] for item in (await agents.get_json())["items"]].count("Dora") == 1
    # The key works: it was created once, and the replay shows that one.
    secret = (await key_again.get_json())["key"]
    assert (
        await client.get(f"/sessions/{world.own_session}", headers=bearer(secret))
    ).status_code == 200


@pytest.mark.parametrize(
    "settings_overrides", [{"idempotency": {"ttl_seconds": 0.3, "lease_seconds": 0.3}}]
)
async def test_a_key_can_be_used_anew_once_it_has_expired(client: TestClientProtocol) -> None:
    session = await create_session(client)
    assert (await post_keyed(client, session["id"], "k-exp")).status_code == 201

    await asyncio.sleep(0.5)
    later = await post_keyed(client, session["id"], "k-exp")

    assert later.status_code == 201
    assert "Idempotent-Replayed" not in later.headers
    assert (await messages_of(client, session["id"])).count("Where is it?") == 2


@pytest.mark.parametrize("settings_overrides", [{"idempotency": {"lease_seconds": 0.3}}])
async def test_a_request_that_died_before_writing_holds_its_key_for_the_lease_only(
    app: Quart, client: TestClientProtocol
) -> None:
    session = await create_session(client)
    keys = app_state(app).idempotency
    body = '{"content":"Where is it?","author_type":"customer","visibility":"public"}'
    path = f"/sessions/{session['id']}/messages"
    # A request claimed the key, then its process died before it wrote anything.
    claim = await keys.begin(local_principal(), "k-died", "POST", path, body)
    assert isinstance(claim, idempotency.Claim)

    during = await post_keyed(client, session["id"], "k-died")
    await asyncio.sleep(0.4)
    after = await post_keyed(client, session["id"], "k-died")

    body = await problem_of(during, 409)
    assert body["type"] == "urn:chat-service:problem:idempotency-key-in-use"
    assert during.headers["Retry-After"] == "1"
    assert after.status_code == 201
    assert (await messages_of(client, session["id"])).count("Where is it?") == 1


@pytest.mark.parametrize("settings_overrides", [{"idempotency": {"lease_seconds": 0.3}}])
async def test_a_write_whose_answer_was_not_kept_is_never_written_again(
    app: Quart, client: TestClientProtocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await create_session(client)

    async def database_gone(*_args: Any) -> None:
        raise Unavailable("the database is not available")

    # The message commits, then the answer cannot be kept (the database went away).
    monkeypatch.setattr(idempotency.Idempotency, "finish", database_gone)
    first = await post_keyed(client, session["id"], "k-lost")
    monkeypatch.undo()
    await asyncio.sleep(0.4)
    retry = await post_keyed(client, session["id"], "k-lost")

    assert first.status_code == 201
    body = await problem_of(retry, 409)
    assert body["type"] == "urn:chat-service:problem:idempotency-answer-lost"
    assert (await messages_of(client, session["id"])).count("Where is it?") == 1


async def test_a_key_used_on_one_replica_is_replayed_by_another(
    app: Quart, client: TestClientProtocol, database_url: str
) -> None:
    other = create_app(load_test_settings(database={"url": database_url}))
    async with other.test_app():
        first = await app.test_client().post("/sessions", headers=keyed("replica"))
        again = await other.test_client().post("/sessions", headers=keyed("replica"))

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.get_data() == await first.get_data()
    assert await session_count(app) == 1


async def test_the_key_is_documented_on_every_create(client: TestClientProtocol) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    creates = {
        ("/sessions", "post"),
        ("/sessions/{session_id}/messages", "post"),
        ("/api-keys", "post"),
        ("/agents", "post"),
        ("/live/tickets", "post"),
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            documented = "Idempotency-Key" in names
            assert documented == ((path, method) in creates), (path, method)
            if documented:
                assert {"400", "409", "422"} <= set(operation["responses"])


async def test_several_keys_in_one_request_answer_400(client: TestClientProtocol) -> None:
    response = await client.post(
        "/sessions", headers=[("Idempotency-Key", "one"), ("Idempotency-Key", "two")]
    )

    body = await problem_of(response, 400)
    assert body["type"] == "urn:chat-service:problem:invalid-idempotency-key"


@pytest.mark.parametrize("settings_overrides", [AUTH_REQUIRED])
async def test_a_replay_goes_only_to_a_credential_with_the_same_rights(
    app: Quart, client: TestClientProtocol
) -> None:
    world = await build_world(app, client)
    db = app_state(app).db
    agent = uuid.UUID(world.own_agent)
    # Two personal keys of one agent: one may write, the other may only read.
    tenant = await _acme(app)
    keys = [
        await api_keys.add_api_key(db, tenant, name=name, scopes=scopes, agent_id=agent)
        for name, scopes in (
            ("writer", [Scope.SESSIONS_READ, Scope.SESSIONS_WRITE]),
            ("reader", [Scope.SESSIONS_READ]),
        )
    ]
    writer, reader = (bearer(key.key or "") for key in keys)
    path = f"/sessions/{world.own_session}/messages"
    body = {"content": "from the writer"}

    written = await client.post(path, json=body, headers={**writer, **keyed("same")})
    by_reader = await client.post(path, json=body, headers={**reader, **keyed("same")})

    assert written.status_code == 201
    await problem_of(by_reader, 403)  # checked, never the writer's answer replayed


async def _acme(app: Quart) -> uuid.UUID:
    async with app_state(app).db.engine.connect() as connection:
        tenant = await connection.scalar(text("SELECT id FROM tenants WHERE slug = 'acme'"))
    return uuid.UUID(str(tenant))


@pytest.mark.parametrize(
    "settings_overrides", [{"idempotency": {"lease_seconds": 0.3, "ttl_seconds": 60}}]
)
async def test_a_request_that_ran_past_its_lease_cannot_write_after_a_retry_took_over(
    client: TestClientProtocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await create_session(client)
    post_message = messages.post_message
    calls = 0

    async def slow_first(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.8)  # the first request stalls past its lease
        return await post_message(*args, **kwargs)

    monkeypatch.setattr(messages, "post_message", slow_first)
    first = asyncio.ensure_future(post_keyed(client, session["id"], "k-slow"))
    await asyncio.sleep(0.5)
    retry = await post_keyed(client, session["id"], "k-slow")
    stalled = await first

    assert retry.status_code == 201
    body = await problem_of(stalled, 409)
    assert body["type"] == "urn:chat-service:problem:idempotency-key-in-use"
    assert (await messages_of(client, session["id"])).count("Where is it?") == 1
    replay = await post_keyed(client, session["id"], "k-slow")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.get_data() == await retry.get_data()


async def test_a_request_that_failed_after_writing_is_not_run_again(
    client: TestClientProtocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await create_session(client)

    def read_fails(*_args: Any, **_kwargs: Any) -> Any:
        raise Unavailable("the database is not available")

    # The message commits; reading the session back for the answer fails (503).
    monkeypatch.setattr(messages, "recent_messages", read_fails)
    failed = await post_keyed(client, session["id"], "k-half")
    monkeypatch.undo()
    retry = await post_keyed(client, session["id"], "k-half")

    await problem_of(failed, 503)
    body = await problem_of(retry, 409)  # at once, not after the lease
    assert body["type"] == "urn:chat-service:problem:idempotency-answer-lost"
    assert (await messages_of(client, session["id"])).count("Where is it?") == 1
