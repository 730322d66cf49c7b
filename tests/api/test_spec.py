"""The OpenAPI document says what the service does, so that clients and fuzzers can trust it.

tests/test_fuzz.py checks the whole document against the running service; these tests
pin what it needed said.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from quart.typing import TestClientProtocol

from chat_service.transport.messages import STORABLE_TEXT_PATTERN, WHITESPACE, storable_text


async def spec_of(client: TestClientProtocol) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = await response.get_json()
    return spec


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


async def test_answers_without_a_body_are_documented_as_204(client: TestClientProtocol) -> None:
    found = operations(await spec_of(client))

    empty = {key for key, operation in found.items() if "204" in operation["responses"]}

    assert empty == {
        ("POST", "/sessions/{session_id}/read"),
        ("DELETE", "/sessions/{session_id}/messages/{message_id}"),
        ("POST", "/sessions/{session_id}/typing"),
        ("DELETE", "/api-keys/{key_id}"),
    }
    assert all("content" not in found[key]["responses"]["204"] for key in empty)


async def test_live_streams_are_documented_as_event_streams(client: TestClientProtocol) -> None:
    found = operations(await spec_of(client))

    for path in ["/sessions/{session_id}/events", "/events"]:
        content = found["GET", path]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
        assert "message" in content["text/event-stream"]["schema"]["properties"]["event"]["enum"]


async def test_a_ticket_is_a_security_scheme_of_the_live_streams_only(
    client: TestClientProtocol,
) -> None:
    spec = await spec_of(client)

    ticket = spec["components"]["securitySchemes"]["ticket"]
    assert (ticket["type"], ticket["in"], ticket["name"]) == ("apiKey", "query", "ticket")
    for (method, path), operation in operations(spec).items():
        live = path.endswith("/events")
        assert ({"ticket": []} in operation.get("security", [])) == live, (method, path)
        if live:
            names = [parameter["name"] for parameter in operation["parameters"]]
            assert "ticket" not in names  # the scheme's, not a parameter of its own
            assert "after" in names


async def test_bodies_are_required_except_a_new_sessions(client: TestClientProtocol) -> None:
    found = operations(await spec_of(client))

    required = {
        key: op["requestBody"]["required"] for key, op in found.items() if "requestBody" in op
    }

    assert [key for key, value in required.items() if not value] == [("POST", "/sessions")]
    assert len(required) == 8


async def test_path_ids_are_uuids(client: TestClientProtocol) -> None:
    for operation in operations(await spec_of(client)).values():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["schema"] == {"type": "string", "format": "uuid"}


@pytest.mark.parametrize(
    "settings_overrides",
    [{"limits": {"page_size_default": 7, "page_size_max": 7, "message_chars": 5}}],
)
async def test_the_configured_limits_are_in_the_spec(client: TestClientProtocol) -> None:
    found = operations(await spec_of(client))

    limits = [
        choice
        for operation in found.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "limit"
        for choice in parameter["schema"]["anyOf"]
        if choice["type"] == "integer"
    ]
    assert len(limits) == 4
    assert all((limit["minimum"], limit["maximum"]) == (1, 7) for limit in limits)
    for key in [
        ("POST", "/sessions/{session_id}/messages"),
        ("PATCH", "/sessions/{session_id}/messages/{message_id}"),
    ]:
        body = found[key]["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["content"]["maxLength"] == 5


def test_whitespace_is_what_python_strips() -> None:
    whitespace = re.compile(f"[{WHITESPACE}]")

    differ = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if bool(whitespace.fullmatch(chr(code))) != chr(code).isspace()
    ]

    assert differ == []


@pytest.mark.parametrize(
    "text", ["a", "  a\t", "\u3000x\u3000", "\x1c", " \n ", "\x85", "a\x00b", "\x00", "", "é"]
)
def test_the_documented_pattern_accepts_what_storable_text_does(text: str) -> None:
    try:
        storable_text(text)
        accepted = True
    except ValueError:
        accepted = False

    assert bool(re.fullmatch(STORABLE_TEXT_PATTERN, text)) == accepted
