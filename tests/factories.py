"""Builders that make state through the HTTP API, as a client would."""

from __future__ import annotations

from typing import Any

from quart.typing import TestClientProtocol

JSON = {"Content-Type": "application/json"}


async def create_session(client: TestClientProtocol) -> dict[str, Any]:
    response = await client.post("/sessions")
    assert response.status_code == 201, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def send_message(
    client: TestClientProtocol,
    session_id: str,
    content: str = "Where is my order?",
    author_type: str = "customer",
    *,
    prefer: str | None = None,
) -> Any:
    """POST a message and return the response as it is, whatever its status."""
    return await client.post(
        f"/sessions/{session_id}/messages",
        json={"content": content, "author_type": author_type},
        headers={"Prefer": prefer} if prefer else {},
    )


async def post_message(
    client: TestClientProtocol,
    session_id: str,
    content: str = "Where is my order?",
    author_type: str = "customer",
    *,
    minimal: bool = False,
) -> dict[str, Any]:
    prefer = "return=minimal" if minimal else None
    response = await send_message(client, session_id, content, author_type, prefer=prefer)
    assert response.status_code == 201, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def problem_of(response: Any, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = await response.get_json(force=True)
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body
