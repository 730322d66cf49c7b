"""Events written straight to a waiting connection (``live.direct_writes``).

Every live test runs on Hypercorn, so the sinks carry their events; these tests check
that they do (a Hypercorn release that moved its internals would silently fall back
to the slower path otherwise), where they must not, and how a subscription hands
over between its sink and its queue.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import uvloop

from chat_service.routes import live_sinks
from chat_service.services.live import (
    CloseReason,
    EventKind,
    LiveEvent,
    StreamClosed,
    Subscription,
)
from tests.live.test_session_stream import open_session, post
from tests.live_support import LiveServer, sse, ws

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sink_writes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Events written by each kind of sink, counted."""
    counts: Counter[str] = Counter()
    for kind, sink_class in (("sse", live_sinks._ChunkedSink), ("ws", live_sinks._WebSocketSink)):
        original = sink_class.write

        def counted(
            self: Any, events: Sequence[LiveEvent], kind: str = kind, original: Any = original
        ) -> bool:
            written: bool = original(self, events)
            counts[kind] += len(events) if written else 0
            return written

        monkeypatch.setattr(sink_class, "write", counted)
    return counts


async def follow_three_messages(server: LiveServer, *, deflate: bool = False) -> None:
    """An SSE and a WebSocket client each get three messages, posted one by one."""
    session = await open_session(server)
    path = f"/sessions/{session['id']}"
    async with (
        server.client() as client,
        sse(client, f"{path}/events") as stream,
        ws(server, f"{path}/live", deflate=deflate) as socket,
    ):
        for n in range(3):
            seq = await post(server, session["id"], f"m{n}")
            event, frame = await stream.until("message"), await socket.until("message")
            assert (event.id, event.data["content"]) == (str(seq), f"m{n}")
            assert (frame["id"], frame["data"]["content"]) == (seq, f"m{n}")


async def test_events_for_waiting_connections_are_written_straight(
    server: LiveServer, sink_writes: Counter[str]
) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # as in production
    await follow_three_messages(server)
    # The first may find a stream still starting; the next ones find both waiting.
    assert sink_writes["sse"] >= 2
    assert sink_writes["ws"] >= 2


async def test_a_websocket_with_deflate_gets_its_events_through_asgi(
    server: LiveServer, sink_writes: Counter[str]
) -> None:
    await follow_three_messages(server, deflate=True)
    assert sink_writes["ws"] == 0
    assert sink_writes["sse"] >= 2


class TestDirectWritesOff:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"direct_writes": False}}

    async def test_every_event_goes_through_asgi(
        self, server: LiveServer, sink_writes: Counter[str]
    ) -> None:
        await follow_three_messages(server)
        assert sink_writes == Counter()


# -- a subscription between its sink and its queue ------------------------------------


class RecordingSink:
    def __init__(self) -> None:
        self.accepting = True
        self.written: list[int | None] = []

    def write(self, events: Sequence[LiveEvent]) -> bool:
        if not self.accepting:
            return False
        self.written.extend(event.position for event in events)
        return True


def message(seq: int, *, internal: bool = False) -> LiveEvent:
    return LiveEvent(EventKind.MESSAGE, None, position=seq, internal=internal)


async def waiting(subscription: Subscription) -> asyncio.Future[LiveEvent | None]:
    task = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0)
    assert subscription.direct
    return task


async def test_a_waiting_subscription_writes_to_its_sink_skipping_what_it_has() -> None:
    sink = RecordingSink()
    subscription = Subscription(staff=False, limit=3, sink=sink)
    subscription.cursor = 2  # sent up to seq 2 while catching up
    task = await waiting(subscription)
    subscription.offer([message(2), message(3), message(4, internal=True), message(5)])
    subscription.offer([message(5)])
    assert sink.written == [3, 5]  # no repeat, and no internal note for a customer
    assert subscription.cursor == 5
    assert not task.done()
    task.cancel()


async def test_a_refused_write_queues_in_order_then_overflows() -> None:
    sink = RecordingSink()
    subscription = Subscription(staff=True, limit=3, sink=sink)
    subscription.cursor = 0
    task = await waiting(subscription)
    subscription.offer([message(1)])
    sink.accepting = False  # the client stopped reading
    subscription.offer([message(2)])
    assert not subscription.direct
    sink.accepting = True
    subscription.offer([message(3)])  # behind the queued one: queued too, not written
    assert sink.written == [1]
    first = await task
    assert first is not None
    assert first.position == 2
    assert [event.position for event in subscription.take_queued()] == [3]
    # The stream's task falls behind: the queue fills, and the stream ends.
    subscription.offer([message(4), message(5), message(6)])
    subscription.offer([message(7)])
    assert subscription.closed is CloseReason.OVERFLOW
    assert [event.position for event in subscription.take_queued()] == [4, 5, 6]
    with pytest.raises(StreamClosed):
        await subscription.next()
