"""The original service's contract, kept exactly (fields may only be added)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from quart.typing import TestClientProtocol

from tests.factories import create_session, post_message, problem_of, send_message


def assert_utc_timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    assert abs(datetime.now(UTC) - parsed) < timedelta(minutes=5)
    return parsed


def assert_message(message: dict[str, Any], author_type: str, content: str) -> None:
    assert message["author_type"] == author_type
    assert message["content"] == content
    assert_utc_timestamp(message["timestamp"])
    uuid.UUID(message["id"])


async def test_create_session_answers_201_with_greeting(client: TestClientProtocol) -> None:
    response = await client.post("/sessions")

    assert response.status_code == 201
    assert response.mimetype == "application/json"
    body = await response.get_json()
    assert response.headers["Location"] == f"/sessions/{body['id']}"
    assert uuid.UUID(body["id"]).version == 7
    assert_utc_timestamp(body["created_at"])
    assert len(body["messages"]) == 1
    assert_message(body["messages"][0], "service_agent", "Hello, how may I help you?")
    assert body["messages"][0]["seq"] == 1
    assert "messages_truncated" not in body


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", {}),
        (b"", {"Content-Type": "application/json"}),
        (b"{}", {"Content-Type": "application/json"}),
        (b"  \n", {"Content-Type": "text/plain"}),
    ],
)
async def test_create_session_accepts_an_empty_body(
    client: TestClientProtocol, body: bytes, headers: dict[str, str]
) -> None:
    response = await client.post("/sessions", data=body, headers=headers)

    assert response.status_code == 201
    assert len((await response.get_json())["messages"]) == 1


@pytest.mark.parametrize(
    "settings_overrides", [{"sessions": {"default_message": "Hi! Ask us anything."}}]
)
async def test_greeting_is_the_configured_default_message(client: TestClientProtocol) -> None:
    session = await create_session(client)

    assert session["messages"][0]["content"] == "Hi! Ask us anything."


@pytest.mark.parametrize("author_type", ["customer", "service_agent"])
async def test_post_message_answers_the_whole_session(
    client: TestClientProtocol, author_type: str
) -> None:
    session = await create_session(client)

    response = await send_message(client, session["id"], "My parcel never came.", author_type)

    assert response.status_code == 201
    body = await response.get_json()
    assert body["id"] == session["id"]
    assert body["created_at"] == session["created_at"]
    assert [m["seq"] for m in body["messages"]] == [1, 2]
    assert_message(body["messages"][-1], author_type, "My parcel never came.")
    assert response.headers["Location"] == (
        f"/sessions/{session['id']}/messages/{body['messages'][-1]['id']}"
    )


async def test_get_session_lists_messages_in_posted_order(client: TestClientProtocol) -> None:
    session = await create_session(client)
    texts = ["first", "second", "third"]
    for index, text in enumerate(texts):
        await post_message(client, session["id"], text, ["customer", "service_agent"][index % 2])

    response = await client.get(f"/sessions/{session['id']}")

    assert response.status_code == 200
    body = await response.get_json()
    assert [m["content"] for m in body["messages"]] == ["Hello, how may I help you?", *texts]
    assert [m["seq"] for m in body["messages"]] == [1, 2, 3, 4]
    assert body["updated_at"] >= body["created_at"]
    assert "messages_truncated" not in body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sessions/{unknown}"),
        ("POST", "/sessions/{unknown}/messages"),
        ("GET", "/sessions/{unknown}/messages"),
        ("GET", "/sessions/{unknown}/messages/{unknown}"),
        ("GET", "/sessions/not-a-uuid"),
        ("POST", "/sessions/not-a-uuid/messages"),
        ("GET", "/sessions/12345/messages"),
    ],
)
async def test_unknown_or_malformed_session_is_404(
    client: TestClientProtocol, method: str, path: str
) -> None:
    url = path.format(unknown=uuid.uuid4())
    response = await client.open(
        url, method=method, json={"content": "hello", "author_type": "customer"}
    )

    body = await problem_of(response, 404)
    assert body["title"] == "Resource not found" or body["title"] == "Not Found"


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/health", "application/json"),
        ("/docs", "text/html"),
        ("/redocs", "text/html"),
        ("/openapi.json", "application/json"),
    ],
)
async def test_health_and_documentation_are_served(
    client: TestClientProtocol, path: str, mimetype: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.mimetype == mimetype


async def test_openapi_describes_the_original_paths(client: TestClientProtocol) -> None:
    spec = await (await client.get("/openapi.json")).get_json()

    assert {"/sessions", "/sessions/{session_id}", "/sessions/{session_id}/messages"} <= set(
        spec["paths"]
    )
    assert "post" in spec["paths"]["/sessions/{session_id}/messages"]
