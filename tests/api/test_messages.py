"""Message order, pagination, single messages, Prefer: return=minimal, bounded sessions."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol

from tests.factories import create_session, post_message, problem_of, send_message


async def session_with_messages(client: TestClientProtocol, count: int) -> dict[str, Any]:
    """A session holding the greeting plus ``count`` posted messages (seq 1..count+1)."""
    session = await create_session(client)
    for index in range(count):
        await post_message(client, session["id"], f"message {index}", minimal=True)
    return session


async def all_pages(client: TestClientProtocol, session_id: str, limit: int) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        query = f"limit={limit}" + (f"&after={cursor}" if cursor else "")
        response = await client.get(f"/sessions/{session_id}/messages?{query}")
        assert response.status_code == 200
        body = await response.get_json()
        pages.append([m["seq"] for m in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_pages_cover_every_message_once_in_order(client: TestClientProtocol) -> None:
    session = await session_with_messages(client, 6)

    pages = await all_pages(client, session["id"], limit=3)

    assert pages == [[1, 2, 3], [4, 5, 6], [7]]


async def test_exact_multiple_ends_with_a_null_cursor(client: TestClientProtocol) -> None:
    session = await session_with_messages(client, 3)

    assert await all_pages(client, session["id"], limit=2) == [[1, 2], [3, 4]]


async def test_default_page_size_is_50(client: TestClientProtocol) -> None:
    session = await session_with_messages(client, 55)

    body = await (await client.get(f"/sessions/{session['id']}/messages")).get_json()

    assert [m["seq"] for m in body["items"]] == list(range(1, 51))
    assert body["next_cursor"] is not None


@pytest.mark.parametrize(
    "settings_overrides", [{"limits": {"page_size_default": 2, "page_size_max": 4}}]
)
async def test_page_sizes_are_configurable(client: TestClientProtocol) -> None:
    session = await session_with_messages(client, 5)
    path = f"/sessions/{session['id']}/messages"

    default = await (await client.get(path)).get_json()
    largest = await (await client.get(f"{path}?limit=4")).get_json()
    too_large = await client.get(f"{path}?limit=5")

    assert len(default["items"]) == 2
    assert len(largest["items"]) == 4
    await problem_of(too_large, 422)


async def test_cursor_keeps_working_as_messages_arrive(client: TestClientProtocol) -> None:
    session = await session_with_messages(client, 1)
    first = await (await client.get(f"/sessions/{session['id']}/messages?limit=1")).get_json()
    await post_message(client, session["id"], "late arrival")

    response = await client.get(f"/sessions/{session['id']}/messages?after={first['next_cursor']}")

    body = await response.get_json()
    assert [m["content"] for m in body["items"]] == ["message 0", "late arrival"]


async def test_location_of_a_created_message_returns_it(client: TestClientProtocol) -> None:
    session = await create_session(client)
    created = await client.post(
        f"/sessions/{session['id']}/messages",
        json={"content": "Can I change my address?", "author_type": "customer"},
    )

    response = await client.get(created.headers["Location"])

    assert response.status_code == 200
    body = await response.get_json()
    assert body == (await created.get_json())["messages"][-1]
    assert body["seq"] == 2


async def test_message_of_another_session_is_404(client: TestClientProtocol) -> None:
    first, second = await create_session(client), await create_session(client)
    message_id = first["messages"][0]["id"]

    response = await client.get(f"/sessions/{second['id']}/messages/{message_id}")

    await problem_of(response, 404)


@pytest.mark.parametrize(
    "prefer", ["return=minimal", 'respond-async, RETURN="minimal"', "return=minimal, return=x"]
)
async def test_prefer_minimal_answers_the_message_alone(
    client: TestClientProtocol, prefer: str
) -> None:
    session = await create_session(client)

    response = await send_message(client, session["id"], "Thanks!", prefer=prefer)

    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=minimal"
    assert response.headers["Vary"] == "Prefer"
    body = await response.get_json()
    assert body["content"] == "Thanks!"
    assert body["seq"] == 2
    assert response.headers["Location"].endswith(f"/messages/{body['id']}")


@pytest.mark.parametrize(
    "prefer", ["return=representation", "return=representation, return=minimal"]
)
async def test_prefer_representation_answers_the_session(
    client: TestClientProtocol, prefer: str
) -> None:
    session = await create_session(client)

    response = await send_message(client, session["id"], "Thanks!", prefer=prefer)

    assert "Preference-Applied" not in response.headers
    assert len((await response.get_json())["messages"]) == 2


@pytest.mark.parametrize("settings_overrides", [{"limits": {"session_inline_messages": 3}}])
async def test_long_session_is_truncated_to_the_most_recent(client: TestClientProtocol) -> None:
    session = await session_with_messages(client, 2)
    full = await (await client.get(f"/sessions/{session['id']}")).get_json()
    await post_message(client, session["id"], "fourth")

    truncated = await (await client.get(f"/sessions/{session['id']}")).get_json()
    posted = await post_message(client, session["id"], "fifth")

    assert [m["seq"] for m in full["messages"]] == [1, 2, 3]
    assert "messages_truncated" not in full
    assert [m["seq"] for m in truncated["messages"]] == [2, 3, 4]
    assert truncated["messages_truncated"] is True
    assert [m["seq"] for m in posted["messages"]] == [3, 4, 5]
    assert posted["messages_truncated"] is True
