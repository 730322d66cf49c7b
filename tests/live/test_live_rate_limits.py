"""Rate limits on live connections: streams count as reads, WebSocket frames as REST."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live.test_session_stream import open_session
from tests.live_support import LiveServer, sse_refused, ws, ws_close_code


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return {
        "rate_limits": {
            "enabled": True,
            "strategy": "fixed-window",
            "messages": "2/minute",
            "reads": "2/minute",
            "writes": "",
        }
    }


async def test_websocket_messages_count_with_rest_posts(server: LiveServer) -> None:
    session = await open_session(server)
    token = session["customer_token"]
    async with server.client() as client:
        posted = await client.post(
            f"/sessions/{session['id']}/messages",
            json={"content": "over REST"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert posted.status_code == 201
    async with ws(
        server, f"/sessions/{session['id']}/live", Authorization=f"Bearer {token}"
    ) as socket:
        await socket.send({"type": "message", "content": "over the socket", "ref": "a"})
        assert (await socket.until("ack"))["data"]["ref"] == "a"
        await socket.send({"type": "message", "content": "one too many", "ref": "b"})
        error = await socket.until("error")
        # The socket stays open: the client may send again once the window allows.
        await socket.send({"type": "typing"})
        assert (await socket.until("ack"))["data"]["type"] == "typing"

    assert (error["data"]["ref"], error["data"]["status"]) == ("b", 429)
    assert error["data"]["type"] == "urn:chat-service:problem:rate-limited"


async def test_opening_streams_counts_as_reads(server: LiveServer) -> None:
    session = await open_session(server)
    headers = {"Authorization": f"Bearer {session['customer_token']}"}
    path = f"/sessions/{session['id']}"
    async with server.client() as client:
        assert (await client.get(path, headers=headers)).status_code == 200
        async with ws(server, f"{path}/live", **headers):
            pass  # the second read
        refused = await sse_refused(client, f"{path}/events", **headers)
    code, reason = await ws_close_code(server, f"{path}/live", **headers)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert code == 4429
    assert "reads per minute" in reason
