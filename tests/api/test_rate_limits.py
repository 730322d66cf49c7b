"""Rate limits: per caller and route class, 429 with Retry-After and RateLimit-* headers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from quart.typing import TestClientProtocol

from chat_service.routes import rate_limits
from tests.factories import create_session, problem_of, send_message


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return {
        "rate_limits": {
            "enabled": True,
            "strategy": "fixed-window",
            "sessions": "4/minute",
            "messages": "3/minute",
            "reads": "5/minute",
            "writes": "",
        }
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_as(client: TestClientProtocol, session: dict[str, Any], content: str) -> Any:
    return await client.post(
        f"/sessions/{session['id']}/messages",
        json={"content": content},
        headers=bearer(session["customer_token"]),
    )


async def message_count(client: TestClientProtocol, session_id: str) -> int:
    response = await client.get(f"/sessions/{session_id}/messages?limit=200")
    assert response.status_code == 200
    return len((await response.get_json())["items"])


async def test_a_caller_above_its_limit_gets_429_with_retry_after_and_nothing_is_stored(
    client: TestClientProtocol,
) -> None:
    session = await create_session(client)

    remaining = []
    for index in range(3):
        response = await post_as(client, session, f"message {index}")
        assert response.status_code == 201
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Policy"] == "3;w=60"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    refused = await post_as(client, session, "one too many")

    assert remaining == [2, 1, 0]
    problem = await problem_of(refused, 429)
    assert problem["type"] == "urn:chat-service:problem:rate-limited"
    assert "3 messages per minute" in problem["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert await message_count(client, session["id"]) == 1 + 3  # the greeting and three


async def test_each_caller_has_its_own_count(client: TestClientProtocol) -> None:
    flooding, other = await create_session(client), await create_session(client)
    for index in range(4):
        await post_as(client, flooding, f"flood {index}")

    assert (await post_as(client, flooding, "still refused")).status_code == 429
    assert (await post_as(client, other, "hello")).status_code == 201


async def test_route_classes_are_counted_apart(client: TestClientProtocol) -> None:
    session = await create_session(client)
    for index in range(4):
        await post_as(client, session, f"message {index}")

    read = await client.get(f"/sessions/{session['id']}", headers=bearer(session["customer_token"]))

    assert read.status_code == 200
    assert read.headers["RateLimit-Limit"] == "5"
    assert read.headers["RateLimit-Remaining"] == "4"


async def test_a_class_without_a_limit_sends_no_headers(client: TestClientProtocol) -> None:
    session = await create_session(client)

    response = await client.patch(f"/sessions/{session['id']}", json={"status": "closed"})

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert "RateLimit-Limit" not in response.headers


async def test_callers_without_a_credential_are_counted_by_address(
    client: TestClientProtocol,
) -> None:
    async def open_from(address: str) -> int:
        response = await client.post("/sessions", scope_base={"client": (address, 40000)})
        return int(response.status_code)

    first = [await open_from("192.0.2.1") for _ in range(5)]
    other = await open_from("192.0.2.2")

    assert first == [201, 201, 201, 201, 429]
    assert other == 201


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limits": {
                "enabled": True,
                "messages": "1/minute",
                "storage": "redis",
                "redis_url": "redis://127.0.0.1:1/0",
            }
        }
    ],
)
async def test_requests_go_through_when_redis_cannot_be_reached(
    client: TestClientProtocol,
) -> None:
    session = await create_session(client)

    statuses = [(await send_message(client, session["id"])).status_code for _ in range(3)]

    assert statuses == [201, 201, 201]


@pytest.mark.parametrize("settings_overrides", [{"rate_limits": {"enabled": False}}])
async def test_no_limits_when_switched_off(client: TestClientProtocol) -> None:
    session = await create_session(client)

    response = await send_message(client, session["id"])

    assert response.status_code == 201
    assert "RateLimit-Limit" not in response.headers


DELAYED = {"rate_limits": {"enabled": True, "messages": "2/minute", "refusal_delay_seconds": 0.5}}


@pytest.mark.parametrize("settings_overrides", [DELAYED])
async def test_refusals_wait_while_other_callers_are_served_at_once(
    client: TestClientProtocol,
) -> None:
    flooding, other = await create_session(client), await create_session(client)
    for index in range(2):
        assert (await post_as(client, flooding, f"allowed {index}")).status_code == 201
    finished: list[str] = []

    async def post(session: dict[str, Any], name: str) -> int:
        response = await post_as(client, session, name)
        finished.append(name)
        return int(response.status_code)

    loop = asyncio.get_running_loop()
    started = loop.time()
    # A flood over many connections at once, and another customer's one post.
    flood = [asyncio.ensure_future(post(flooding, f"flood {index}")) for index in range(20)]
    await asyncio.sleep(0)
    assert await post(other, "other") == 201
    statuses = await asyncio.gather(*flood)
    elapsed = loop.time() - started

    assert statuses == [429] * 20
    # The other customer was answered before any refusal, which each waited at least
    # half the delay.
    assert finished[0] == "other"
    assert elapsed >= 0.25


PER_SECOND = {
    "rate_limits": {
        "enabled": True,
        "strategy": "fixed-window",
        "messages": "1/second",
        "refusal_delay_seconds": 1.0,
    }
}


@pytest.mark.parametrize("settings_overrides", [PER_SECOND])
async def test_retry_after_counts_from_when_the_delayed_refusal_is_sent(
    client: TestClientProtocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_limits, "jitter", lambda: 1.0)  # the whole delay
    session = await create_session(client)
    assert (await post_as(client, session, "first")).status_code == 201

    refused = await post_as(client, session, "too soon")
    at_once = await post_as(client, session, "as Retry-After says")

    await problem_of(refused, 429)
    assert refused.headers["Retry-After"] == "0"
    assert refused.headers["RateLimit-Reset"] == "0"
    assert at_once.status_code == 201


async def test_refused_credentials_count_against_the_address(
    client: TestClientProtocol,
) -> None:
    async def guess(address: str, path: str = "/sessions") -> int:
        response = await client.get(
            path, headers=bearer("cst_guessed"), scope_base={"client": (address, 40000)}
        )
        return int(response.status_code)

    guesses = [await guess("192.0.2.7") for _ in range(6)]
    streams = [await guess("192.0.2.9", f"/sessions/{uuid.uuid4()}/events") for _ in range(6)]
    elsewhere = await guess("192.0.2.8")

    assert guesses == [401] * 5 + [429]
    assert streams == [401] * 5 + [429]
    assert elsewhere == 401
