"""A session's live stream over SSE and WebSocket: order, resume, visibility."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.live_support import LiveServer, sse, ws

pytestmark = pytest.mark.timeout(60)


async def open_session(server: LiveServer) -> dict[str, Any]:
    async with server.client() as client:
        response = await client.post("/sessions")
        assert response.status_code == 201, response.text
        return dict(response.json())


async def post(server: LiveServer, session_id: str, content: str, **extra: Any) -> int:
    async with server.client() as client:
        response = await client.post(
            f"/sessions/{session_id}/messages",
            json={"content": content, "author_type": "customer", **extra},
            headers={"Prefer": "return=minimal"},
        )
        assert response.status_code == 201, response.text
        return int(response.json()["seq"])


async def test_sse_replays_from_after_then_delivers_new_messages_live(server: LiveServer) -> None:
    session = await open_session(server)
    await post(server, session["id"], "before the stream")
    async with (
        server.client() as client,
        sse(client, f"/sessions/{session['id']}/events?after=0") as stream,
    ):
        greeting = await stream.next()
        assert (greeting.event, greeting.id, greeting.data["seq"]) == ("message", "1", 1)
        first = await stream.next()
        assert (first.id, first.data["content"]) == ("2", "before the stream")
        await post(server, session["id"], "live one")
        live = await stream.next()
        assert (live.event, live.id, live.data["content"]) == ("message", "3", "live one")
        assert stream.retry is not None


async def test_websocket_resume_after_a_seq(server: LiveServer) -> None:
    session = await open_session(server)
    for n in range(3):
        await post(server, session["id"], f"m{n}")
    async with ws(server, f"/sessions/{session['id']}/live?after=2") as socket:
        frames = [await socket.next() for _ in range(2)]
        assert [frame["id"] for frame in frames] == [3, 4]
        assert [frame["data"]["content"] for frame in frames] == ["m1", "m2"]
        await socket.send(
            {
                "type": "message",
                "content": "over the socket",
                "author_type": "customer",
                "ref": "r1",
            }
        )
        got = [await socket.next(), await socket.next()]
        kinds = sorted(frame["event"] for frame in got)
        assert kinds == ["ack", "message"]
        message = next(frame for frame in got if frame["event"] == "message")
        ack = next(frame for frame in got if frame["event"] == "ack")
        assert message["id"] == 5
        assert ack["data"]["seq"] == 5
        assert ack["data"]["ref"] == "r1"


# ws-deflate: a WebSocket that asks for per-message deflate, as browsers do (the server
# declines it unless live.websocket_compression is on: see TestWithCompression).
TRANSPORTS = ["sse", "ws", "ws-deflate"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reconnecting_while_messages_are_posted_loses_and_repeats_nothing(
    server: LiveServer, transport: str
) -> None:
    await reconnect_while_posting(server, transport)


class TestWithoutDirectWrites:
    """With ``live.direct_writes`` off, every event goes through ASGI: the same contract."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"direct_writes": False}}

    @pytest.mark.parametrize("transport", ["sse", "ws"])
    async def test_reconnecting_while_messages_are_posted_loses_and_repeats_nothing(
        self, server: LiveServer, transport: str
    ) -> None:
        await reconnect_while_posting(server, transport)


class TestWithCompression:
    """With ``live.websocket_compression`` on, each connection compresses its messages in
    turn, with a context carried along: the same contract."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"websocket_compression": True}}

    async def test_reconnecting_while_messages_are_posted_loses_and_repeats_nothing(
        self, server: LiveServer
    ) -> None:
        await reconnect_while_posting(server, "ws-deflate")


async def reconnect_while_posting(server: LiveServer, transport: str) -> None:
    """Messages posted while a client drops and resumes over and over: it gets 1..N."""
    session = await open_session(server)
    total = 60

    async def writer() -> None:
        for n in range(total):
            await post(server, session["id"], f"n{n}")
            await asyncio.sleep(0.005)

    writing = asyncio.ensure_future(writer())
    received: list[int] = []
    last = 0
    path = f"/sessions/{session['id']}"
    while len(received) < total + 1:
        take = 7  # then drop the connection, mid-flow
        if transport == "sse":
            async with (
                server.client() as client,
                sse(
                    client, f"{path}/events?after=0", **{"Last-Event-ID": str(last)} if last else {}
                ) as stream,
            ):
                for _ in range(min(take, total + 1 - len(received))):
                    event = await stream.next()
                    received.append(int(event.id or 0))
        else:
            deflate = transport == "ws-deflate"
            async with ws(server, f"{path}/live?after={last}", deflate=deflate) as socket:
                for _ in range(min(take, total + 1 - len(received))):
                    frame = await socket.next()
                    received.append(frame["id"])
        last = received[-1]
    await writing
    assert received == list(range(1, total + 2))
