"""Bad input always gets a clear 4xx problem, never a 500, and leaves no partial row."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import text

from chat_service.routes.state import app_state
from tests.api.access_world import AUTH_REQUIRED, build_world
from tests.factories import JSON, create_session, post_message, problem_of

LONG = "x" * 10_001


async def assert_unchanged(client: TestClientProtocol, session_id: str, seqs: list[int]) -> None:
    """The service is healthy and the session holds exactly the messages it held before."""
    assert (await client.get("/health/ready")).status_code == 200
    body = await (await client.get(f"/sessions/{session_id}")).get_json()
    assert [m["seq"] for m in body["messages"]] == seqs


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"author_type": "customer"}, "#/content"),
        ({"content": "", "author_type": "customer"}, "#/content"),
        ({"content": "   \n\t", "author_type": "customer"}, "#/content"),
        ({"content": 42, "author_type": "customer"}, "#/content"),
        ({"content": None, "author_type": "customer"}, "#/content"),
        ({"content": ["hi"], "author_type": "customer"}, "#/content"),
        ({"content": "hello"}, "#/author_type"),
        ({"content": "hello", "author_type": "robot"}, "#/author_type"),
        ({"content": "hello", "author_type": "customer", "admin": True}, "#/admin"),
        ({"content": LONG, "author_type": "customer"}, "#/content"),
        ({"content": "nul \x00 inside", "author_type": "customer"}, "#/content"),
        ([], "#"),
        ("just a string", "#"),
        ({"my card 4111 1111": 1, "content": "hi", "author_type": "customer"}, "#"),
    ],
)
async def test_invalid_message_is_422_naming_the_field(
    client: TestClientProtocol, payload: Any, pointer: str
) -> None:
    session = await create_session(client)

    response = await client.post(f"/sessions/{session['id']}/messages", json=payload)

    body = await problem_of(response, 422)
    assert body["type"] == "urn:chat-service:problem:validation-error"
    assert pointer in [error["pointer"] for error in body["errors"]]
    assert "hello" not in json.dumps(body["errors"])
    assert "4111" not in json.dumps(body)
    assert "x" * 50 not in json.dumps(body)
    await assert_unchanged(client, session["id"], [1])


async def test_lone_surrogate_is_422(client: TestClientProtocol) -> None:
    session = await create_session(client)
    raw = b'{"content": "broken \\ud800 text", "author_type": "customer"}'

    response = await client.post(f"/sessions/{session['id']}/messages", data=raw, headers=JSON)

    body = await problem_of(response, 422)
    assert body["errors"][0]["pointer"] == "#/content"
    await assert_unchanged(client, session["id"], [1])


async def test_content_at_the_limit_is_accepted(client: TestClientProtocol) -> None:
    session = await create_session(client)

    body = await post_message(client, session["id"], "é" * 10_000, minimal=True)

    assert len(body["content"]) == 10_000


@pytest.mark.parametrize("settings_overrides", [{"limits": {"message_chars": 5}}])
async def test_message_limit_is_configurable(client: TestClientProtocol) -> None:
    session = await create_session(client)
    path = f"/sessions/{session['id']}/messages"

    accepted = await client.post(path, json={"content": "12345", "author_type": "customer"})
    refused = await client.post(path, json={"content": "123456", "author_type": "customer"})

    assert accepted.status_code == 201
    assert (await problem_of(refused, 422))["errors"][0]["pointer"] == "#/content"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"content": "hi", "author_type": "customer"',
        b"{'content': 'hi'}",
        b"not json at all",
        b'{"content": "caf\xe9", "author_type": "customer"}',
        b"\xff\xfe{}",
        b"[" * 5000 + b"]" * 5000,
    ],
)
async def test_malformed_or_non_utf8_body_is_400(client: TestClientProtocol, raw: bytes) -> None:
    session = await create_session(client)

    response = await client.post(f"/sessions/{session['id']}/messages", data=raw, headers=JSON)

    await problem_of(response, 400)
    await assert_unchanged(client, session["id"], [1])


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/json", "gzip"),
        *(
            (content_type, None)
            for content_type in [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json; charset=latin-1",
                None,
            ]
        ),
    ],
)
async def test_wrong_content_type_or_encoding_is_415(
    client: TestClientProtocol, content_type: str | None, encoding: str | None
) -> None:
    session = await create_session(client)
    headers = {"Content-Type": content_type} if content_type else {}
    if encoding:
        headers["Content-Encoding"] = encoding
    data = b'{"content": "hi", "author_type": "customer"}'

    response = await client.post(f"/sessions/{session['id']}/messages", data=data, headers=headers)

    await problem_of(response, 415)
    await assert_unchanged(client, session["id"], [1])


async def sessions_count(client: TestClientProtocol) -> int:
    """Sessions in the database, counted through the app's own engine."""
    async with app_state(client.app).db.engine.connect() as connection:  # type: ignore[attr-defined]
        return int(await connection.scalar(text("SELECT count(*) FROM chat_sessions")) or 0)


async def test_non_empty_session_body_of_wrong_type_is_415(client: TestClientProtocol) -> None:
    response = await client.post("/sessions", data=b"hello", headers={"Content-Type": "text/plain"})

    await problem_of(response, 415)
    assert await sessions_count(client) == 0


async def test_unknown_field_in_new_session_is_422(client: TestClientProtocol) -> None:
    response = await client.post("/sessions", json={"unexpected": 1})

    body = await problem_of(response, 422)
    assert body["errors"][0]["pointer"] == "#/unexpected"
    assert await sessions_count(client) == 0


async def test_body_above_the_limit_is_413(client: TestClientProtocol) -> None:
    session = await create_session(client)
    raw = json.dumps({"content": "x" * 70_000, "author_type": "customer"}).encode()

    response = await client.post(f"/sessions/{session['id']}/messages", data=raw, headers=JSON)

    await problem_of(response, 413)
    await assert_unchanged(client, session["id"], [1])


async def test_declared_length_above_the_limit_is_413_before_any_body(
    client: TestClientProtocol,
) -> None:
    session = await create_session(client)
    headers = {**JSON, "Content-Length": "10000000"}

    async with client.request(
        f"/sessions/{session['id']}/messages", method="POST", headers=headers
    ) as connection:
        # No body is sent at all: the answer must not wait for one.
        body = json.loads(await asyncio.wait_for(connection.receive(), timeout=5))

    assert connection.status_code == 413
    assert connection.headers is not None
    assert connection.headers["Content-Type"] == "application/problem+json"
    assert body["status"] == 413


@pytest.mark.parametrize(
    "limit", ["0", "-1", "201", "abc", "1.5", "2.0", "5_0", "+5", "%203", "", "1&limit=2"]
)
async def test_out_of_range_or_non_numeric_limit_is_422(
    client: TestClientProtocol, limit: str
) -> None:
    session = await create_session(client)

    response = await client.get(f"/sessions/{session['id']}/messages?limit={limit}")

    body = await problem_of(response, 422)
    assert body["errors"][0]["parameter"] == "limit"
    await assert_unchanged(client, session["id"], [1])


@pytest.mark.parametrize("cursor", ["garbage", "AAAAAAAAAAF7jq0n2J1MFKCmngk", "%00", "A" * 200])
async def test_forged_cursor_is_400(client: TestClientProtocol, cursor: str) -> None:
    session = await create_session(client)

    response = await client.get(f"/sessions/{session['id']}/messages?after={cursor}")

    body = await problem_of(response, 400)
    assert body["type"] == "urn:chat-service:problem:invalid-cursor"
    await assert_unchanged(client, session["id"], [1])


async def test_cursor_of_another_session_is_400(client: TestClientProtocol) -> None:
    first, second = await create_session(client), await create_session(client)
    await post_message(client, first["id"])
    page = await (await client.get(f"/sessions/{first['id']}/messages?limit=1")).get_json()

    response = await client.get(f"/sessions/{second['id']}/messages?after={page['next_cursor']}")

    await problem_of(response, 400)


async def test_wrong_method_is_405_problem(client: TestClientProtocol) -> None:
    response = await client.delete("/sessions")

    await problem_of(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": " "}, "#/name"),
        ({"name": "\x1c"}, "#/name"),  # whitespace to Python, which strips names
        ({"name": " " + "x" * 200}, "#/name"),  # the length is counted as sent
        ({"name": "Ada", "email": "ada\x1c@acme.test"}, "#/email"),
        ({"name": "Ada", "email": "ada\x85@acme.test"}, "#/email"),
    ],
)
@pytest.mark.parametrize("settings_overrides", [AUTH_REQUIRED])
async def test_invalid_agent_is_422_naming_the_field(
    app: Quart, client: TestClientProtocol, body: dict[str, Any], pointer: str
) -> None:
    admin = (await build_world(app, client)).headers["admin"]

    response = await client.post("/agents", json=body, headers=admin)

    assert [e["pointer"] for e in (await problem_of(response, 422))["errors"]] == [pointer]


@pytest.mark.parametrize("settings_overrides", [AUTH_REQUIRED])
async def test_agent_name_is_stored_without_the_whitespace_around_it(
    app: Quart, client: TestClientProtocol
) -> None:
    admin = (await build_world(app, client)).headers["admin"]

    response = await client.post("/agents", json={"name": "\u3000 Ada\x1c\t"}, headers=admin)

    assert response.status_code == 201
    agent = await (await client.get(response.headers["Location"], headers=admin)).get_json()
    assert agent["name"] == "Ada"


@pytest.mark.parametrize("assignee", ["0" * 10 + "-" + "0" * 22, "-" * 4 + "0" * 28, "x" * 32])
async def test_inbox_assignee_that_is_not_a_uuid_is_422(
    client: TestClientProtocol, assignee: str
) -> None:
    response = await client.get(f"/sessions?assignee={assignee}")

    assert (await problem_of(response, 422))["errors"][0]["parameter"] == "assignee"
