"""What live streams carry besides new messages, and how they end."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from chat_service.model import AuthorType
from chat_service.routes.state import app_state
from chat_service.services import messages
from chat_service.services.access import local_principal
from tests.live.test_session_stream import open_session, post
from tests.live_support import LiveServer, sse, sse_refused, ws, ws_close_code

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return {"live": {"heartbeat_seconds": 0.3, "typing_interval_seconds": 2.0}}


async def test_internal_notes_reach_agents_only(server: LiveServer) -> None:
    session = await open_session(server)
    path = f"/sessions/{session['id']}/events"
    customer_token = {"Authorization": f"Bearer {session['customer_token']}"}
    async with (
        server.client() as client,
        sse(client, path) as agent_stream,
        sse(client, path, **customer_token) as customer_stream,
    ):
        async with server.client() as writer:
            note = await writer.post(
                f"/sessions/{session['id']}/messages",
                json={
                    "content": "agents only",
                    "author_type": "service_agent",
                    "visibility": "internal",
                },
            )
            assert note.status_code == 201
        await post(server, session["id"], "for everyone")
        seen_by_agent = [await agent_stream.next(), await agent_stream.next()]
        assert [e.data["content"] for e in seen_by_agent] == ["agents only", "for everyone"]
        seen_by_customer = await customer_stream.next()
        assert seen_by_customer.data["content"] == "for everyone"
        assert seen_by_customer.id == "3"  # the note's seq 2 is skipped, not renumbered


async def test_edits_and_deletions_arrive_as_updates(server: LiveServer) -> None:
    session = await open_session(server)
    async with (
        server.client() as client,
        sse(client, f"/sessions/{session['id']}/events") as stream,
    ):
        response = await client.post(
            f"/sessions/{session['id']}/messages",
            json={"content": "typo", "author_type": "customer"},
            headers={"Prefer": "return=minimal"},
        )
        message = response.json()
        assert (await stream.next()).data["content"] == "typo"
        edited = await client.patch(
            f"/sessions/{session['id']}/messages/{message['id']}", json={"content": "fixed"}
        )
        assert edited.status_code == 200, edited.text
        update = await stream.next()
        assert (update.event, update.id) == ("message.updated", None)
        assert (update.data["seq"], update.data["content"]) == (message["seq"], "fixed")
        deleted = await client.delete(f"/sessions/{session['id']}/messages/{message['id']}")
        assert deleted.status_code == 204
        gone = await stream.next()
        assert (gone.event, gone.data["deleted"], gone.data["content"]) == (
            "message.updated",
            True,
            "",
        )


async def test_idle_streams_get_heartbeats(server: LiveServer) -> None:
    session = await open_session(server)
    async with (
        server.client() as client,
        sse(client, f"/sessions/{session['id']}/events") as stream,
    ):
        with pytest.raises(TimeoutError):
            await stream.next(timeout=1.0)
        assert stream.comments.count("keep-alive") >= 2
    async with ws(server, f"/sessions/{session['id']}/live") as socket:
        assert (await socket.next(timeout=2.0))["event"] == "heartbeat"


async def test_typing_is_relayed_not_stored_and_rate_limited(server: LiveServer) -> None:
    session = await open_session(server)
    customer = {"Authorization": f"Bearer {session['customer_token']}"}
    async with (
        server.client() as client,
        sse(client, f"/sessions/{session['id']}/events") as agent_stream,
        ws(server, f"/sessions/{session['id']}/live", **customer) as socket,
    ):
        await socket.send({"type": "typing", "ref": "t1"})
        ack = await socket.until("ack")
        assert ack["data"] == {"ref": "t1", "type": "typing", "sent": True}
        typing = await agent_stream.next()
        assert typing.event == "typing"
        assert (typing.data["actor"], typing.data["actor_id"]) == ("customer", None)
        await socket.send({"type": "typing", "ref": "t2"})
        assert (await socket.until("ack"))["data"]["sent"] is False  # within the interval
        # REST typing counts against the same limit.
        response = await client.post(f"/sessions/{session['id']}/typing", headers=customer)
        assert response.status_code == 204
        await post(server, session["id"], "after typing")
        assert (await agent_stream.next()).event == "message"  # no second typing event first
        history = await client.get(f"/sessions/{session['id']}/messages")
        assert [item["content"] for item in history.json()["items"]][-1] == "after typing"
        assert len(history.json()["items"]) == 2  # typing left nothing behind


async def test_reads_are_stored_and_relayed(server: LiveServer) -> None:
    session = await open_session(server)
    await post(server, session["id"], "unread")
    customer = {"Authorization": f"Bearer {session['customer_token']}"}
    async with (
        server.client() as client,
        sse(client, f"/sessions/{session['id']}/events") as agent_stream,
        ws(server, f"/sessions/{session['id']}/live", **customer) as socket,
    ):
        inbox = await client.get("/sessions")
        assert inbox.json()["items"][0]["unread_count"] == 1  # the customer's message
        await socket.send({"type": "read", "seq": 2, "ref": "r"})
        assert (await socket.until("ack"))["data"] == {"ref": "r", "type": "read", "seq": 2}
        read = await agent_stream.until("read")
        assert (read.data["actor"], read.data["seq"]) == ("customer", 2)
        await socket.send({"type": "read", "seq": 1})  # behind: the position stays
        assert (await socket.until("ack"))["data"]["seq"] == 2
        read = await agent_stream.until("read")
        assert (read.data["actor"], read.data["seq"]) == ("customer", 2)
        # The agent's own read (no credential: the local caller) clears the inbox count.
        marked = await client.post(f"/sessions/{session['id']}/read", json={"seq": 2})
        assert marked.status_code == 204
        inbox = await client.get("/sessions")
        assert inbox.json()["items"][0]["unread_count"] == 0
        await socket.send({"type": "read", "seq": 99})
        error = await socket.until("error")
        assert (error["data"]["status"], error["data"]["errors"][0]["pointer"]) == (422, "#/seq")


async def test_bad_client_frames_get_an_error_and_the_socket_stays_open(
    server: LiveServer,
) -> None:
    session = await open_session(server)
    async with ws(server, f"/sessions/{session['id']}/live") as socket:
        await socket.connection.send("not json")
        assert (await socket.until("error"))["data"]["status"] == 400
        await socket.send({"type": "shout", "ref": "x"})
        error = await socket.until("error")
        assert (error["data"]["status"], error["data"]["ref"]) == (422, "x")
        await socket.send({"type": "message", "content": "   ", "author_type": "customer"})
        assert (await socket.until("error"))["data"]["status"] == 422
        await socket.send({"type": "message", "content": "x" * 10_001, "author_type": "customer"})
        assert (await socket.until("error"))["data"]["errors"][0]["pointer"] == "#/content"
        await socket.send({"type": "message", "content": "fine"})  # no author without a credential
        assert (await socket.until("error"))["data"]["errors"][0]["pointer"] == "#/author_type"
        await socket.send({"type": "message", "content": "fine", "author_type": "customer"})
        assert (await socket.until("ack"))["data"]["seq"] == 2


async def test_a_frame_above_the_body_limit_closes_with_1009(server: LiveServer) -> None:
    session = await open_session(server)
    async with ws(server, f"/sessions/{session['id']}/live") as socket:
        await socket.connection.send("x" * (64 * 1024 + 1))
        await socket.until_closed()
        assert socket.connection.close_code == 1009


async def test_resuming_beyond_the_last_seq_is_refused(server: LiveServer) -> None:
    session = await open_session(server)
    async with server.client() as client:
        response = await sse_refused(client, f"/sessions/{session['id']}/events?after=5")
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {"detail": "the session's last seq is 1", "parameter": "after"}
        ]
        response = await sse_refused(
            client, f"/sessions/{session['id']}/events", **{"Last-Event-ID": "5"}
        )
        assert response.json()["errors"][0]["parameter"] == "Last-Event-ID"
        response = await sse_refused(
            client, f"/sessions/{session['id']}/events", **{"Last-Event-ID": "abc"}
        )
        assert response.status_code == 422
        response = await sse_refused(client, f"/sessions/{session['id']}/events?after=-1")
        assert response.status_code == 422
    closed = await ws_close_code(server, f"/sessions/{session['id']}/live?after=5")
    assert closed == (4422, "after: the session's last seq is 1")
    code, _ = await ws_close_code(server, "/sessions/00000000-0000-7000-8000-000000000000/live")
    assert code == 4404


async def test_shutdown_closes_streams_with_going_away(server: LiveServer) -> None:
    session = await open_session(server)
    async with (
        server.client() as client,
        sse(client, f"/sessions/{session['id']}/events") as stream,
        ws(server, f"/sessions/{session['id']}/live") as socket,
    ):
        server.stop()
        closing = await stream.until("close")
        assert closing.data == {"reason": "shutdown"}
        await socket.until_closed()
        assert socket.connection.close_code == 1001


class TestSlowConsumers:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        # Through ASGI, every event takes the connection's queue. (Written straight,
        # a burst to a client that reads fine ends nothing; a client that stops reading
        # is in test_live_sinks.)
        return {"live": {"queue_events": 3, "direct_writes": False}}

    async def test_an_overflowing_stream_is_closed_and_resumes_without_loss(
        self, server: LiveServer
    ) -> None:
        session = await open_session(server)
        path = f"/sessions/{session['id']}"
        state = app_state(server.app)
        async with ws(server, f"{path}/live") as socket:
            # Forty messages committed in one transaction (group commit) reach the feed
            # in one read: more than the queue holds before the connection's sender runs.
            await asyncio.gather(
                *(
                    messages.post_message(
                        state.db,
                        local_principal(),
                        publish=state.live.publish,
                        session_id=uuid.UUID(session["id"]),
                        content=f"burst {n}",
                        author_type=AuthorType.CUSTOMER,
                    )
                    for n in range(40)
                )
            )
            received = [frame["id"] for frame in await socket.until_closed()]
            closed = (socket.connection.close_code, socket.connection.close_reason)
            assert closed == (1013, "too slow: resume after the last id")
        assert received == list(range(2, 2 + len(received)))
        assert len(received) < 40
        async with ws(server, f"{path}/live?after={received[-1] if received else 1}") as again:
            rest = [(await again.next())["id"] for _ in range(40 - len(received))]
        assert received + rest == list(range(2, 42))


class TestLostNotices:
    """A write whose notice never went out (its process died after COMMIT) still
    reaches the streams, by the periodic resync."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"resync_seconds": 0.3, "tenant_replay_seconds": 5}}

    async def test_the_periodic_resync_delivers_what_was_never_announced(
        self, server: LiveServer
    ) -> None:
        session = await open_session(server)
        state = app_state(server.app)

        def lost(_notices: object) -> None:
            pass

        async with (
            server.client() as client,
            sse(client, f"/sessions/{session['id']}/events") as session_stream,
            sse(client, "/events") as tenant_stream,
        ):
            await messages.post_message(
                state.db,
                local_principal(),
                publish=lost,
                session_id=uuid.UUID(session["id"]),
                content="unannounced",
                author_type=AuthorType.CUSTOMER,
            )
            event = await session_stream.next(timeout=5)
            assert (event.id, event.data["content"]) == ("2", "unannounced")
            message = await tenant_stream.until("message", timeout=5)
            assert message.data["content"] == "unannounced"
            changed = await tenant_stream.until("session", timeout=5)
            assert (changed.data["id"], changed.data["last_seq"]) == (session["id"], 2)
