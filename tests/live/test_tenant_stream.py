"""The agents' stream of their tenant: the inbox, live."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live.test_session_stream import open_session, post
from tests.live_support import LiveServer, sse, ws

pytestmark = pytest.mark.timeout(60)


async def test_new_sessions_messages_and_case_changes_arrive(server: LiveServer) -> None:
    async with server.client() as client, sse(client, "/events") as stream:
        session = await open_session(server)
        greeting = await stream.next()
        assert (greeting.event, greeting.data["seq"]) == ("message", 1)
        opened = await stream.next()
        assert opened.event == "session"
        assert (opened.data["id"], opened.data["status"], opened.data["last_seq"]) == (
            session["id"],
            "open",
            1,
        )
        assert opened.id is not None
        await post(server, session["id"], "help please")
        message = await stream.until("message")
        assert (message.data["content"], message.data["seq"]) == ("help please", 2)
        state = await stream.until("session")
        assert state.data["last_seq"] == 2
        assert int(state.id or 0) >= int(opened.id)
        changed = await client.patch(
            f"/sessions/{session['id']}", json={"status": "pending", "tags": ["billing"]}
        )
        assert changed.status_code == 200, changed.text
        state = await stream.until("session")
        assert (state.data["status"], state.data["tags"]) == ("pending", ["billing"])
        assert state.data["last_seq"] == changed.json()["messages"][-1]["seq"]


async def test_internal_notes_are_in_the_agents_stream(server: LiveServer) -> None:
    session = await open_session(server)
    async with ws(server, "/live") as socket:
        async with server.client() as client:
            response = await client.post(
                f"/sessions/{session['id']}/messages",
                json={"content": "note", "author_type": "service_agent", "visibility": "internal"},
            )
            assert response.status_code == 201
        frame = await socket.until("message")
        assert (frame["data"]["content"], frame["data"]["visibility"]) == ("note", "internal")
        assert frame["id"] is None  # messages are resumed through session events
        state = await socket.until("session")
        assert state["data"]["id"] == session["id"]
        assert isinstance(state["id"], int)


async def test_resuming_replays_the_sessions_changed_since(server: LiveServer) -> None:
    first = await open_session(server)
    async with server.client() as client, sse(client, "/events") as stream:
        await post(server, first["id"], "hello")
        position = (await stream.until("session")).id
    second = await open_session(server)  # while disconnected
    await post(server, second["id"], "missed")
    async with (
        server.client() as client,
        sse(client, "/events", **{"Last-Event-ID": str(position)}) as stream,
    ):
        replayed: dict[str, Any] = {}
        while second["id"] not in replayed:
            event = await stream.next()
            assert event.event == "session"  # a replay is session states only
            replayed[event.data["id"]] = event.data
        assert replayed[second["id"]]["last_seq"] == 2
        await post(server, second["id"], "live again")
        assert (await stream.until("message")).data["content"] == "live again"


class TestLongAbsences:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"tenant_replay_seconds": 0}}

    async def test_too_much_missed_asks_for_a_reload(
        self, server: LiveServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("chat_service.services.live.TENANT_REPLAY_MAX", 2)
        for _ in range(3):
            await open_session(server)
        async with server.client() as client, sse(client, "/events?after=0") as stream:
            assert (await stream.next()).event == "resync"


async def test_customers_cannot_follow_the_tenant(server: LiveServer) -> None:
    session = await open_session(server)
    async with (
        server.client() as client,
        client.stream(
            "GET", "/events", headers={"Authorization": f"Bearer {session['customer_token']}"}
        ) as response,
    ):
        await response.aread()
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"


async def test_every_event_of_one_commit_is_shown(server: LiveServer) -> None:
    session = await open_session(server)
    async with server.client() as client:
        resolved = await client.patch(f"/sessions/{session['id']}", json={"status": "resolved"})
        assert resolved.status_code == 200, resolved.text
        async with sse(client, "/events") as stream:
            # The customer's message reopens the case: one commit, two seqs.
            await post(server, session["id"], "it broke again")
            first = await stream.until("message")
            second = await stream.next()
            assert (first.data["content"], second.data["type"]) == ("it broke again", "event")
            assert second.data["seq"] == first.data["seq"] + 1
            state = await stream.until("session")
            assert (state.data["status"], state.data["last_seq"]) == ("pending", second.data["seq"])


async def test_a_position_from_the_future_replays_nothing(server: LiveServer) -> None:
    session = await open_session(server)
    async with (
        server.client() as client,
        sse(client, "/events?after=9999999999999999999") as stream,
    ):
        await post(server, session["id"], "live")  # (read as now: the overlap replays)
        assert (await stream.until("message")).data["content"] == "live"
