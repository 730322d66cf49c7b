"""Events written straight to a waiting connection (``live.direct_writes``).

Every live test runs on Hypercorn, so the sinks carry their events; these tests check
that they do (a Hypercorn release that moved its internals would silently fall back
to the slower path otherwise), where they must not, and how a subscription hands
over between its sink and its queue.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop
from hypercorn.protocol.ws_stream import ASGIWebsocketState
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType

from chat_service.model import AuthorType
from chat_service.routes import live_sinks
from chat_service.routes.state import app_state
from chat_service.services import messages
from chat_service.services.access import local_principal
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
    for kind, sink_class in (
        ("sse", live_sinks._ChunkedSink),
        ("ws", live_sinks._WebSocketSink),
        ("ws-deflate", live_sinks._CompressedWebSocketSink),
    ):
        original = sink_class.write

        def counted(
            self: Any, events: Sequence[LiveEvent], kind: str = kind, original: Any = original
        ) -> bool:
            written: bool = original(self, events)
            counts[kind] += len(events) if written else 0
            return written

        monkeypatch.setattr(sink_class, "write", counted)
    return counts


async def follow_three_messages(server: LiveServer, *, deflate: bool = False) -> str | None:
    """An SSE and a WebSocket client each get three messages, posted one by one.

    Returns the WebSocket's agreed extensions.
    """
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
        response = socket.connection.response
        assert response is not None
        extensions: str | None = response.headers.get("Sec-WebSocket-Extensions")
        return extensions


async def test_events_for_waiting_connections_are_written_straight(
    server: LiveServer, sink_writes: Counter[str]
) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # as in production
    await follow_three_messages(server)
    # The first may find a stream still starting; the next ones find both waiting.
    assert sink_writes["sse"] >= 2
    assert sink_writes["ws"] >= 2


async def test_a_websocket_that_asks_for_deflate_is_answered_without_it(
    server: LiveServer, sink_writes: Counter[str]
) -> None:
    assert await follow_three_messages(server, deflate=True) is None
    assert sink_writes["ws"] >= 2
    assert sink_writes["ws-deflate"] == 0


class TestWebSocketCompression:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"websocket_compression": True}}

    async def test_a_websocket_with_deflate_gets_its_messages_compressed_and_straight(
        self, server: LiveServer, sink_writes: Counter[str]
    ) -> None:
        extensions = await follow_three_messages(server, deflate=True)
        assert extensions is not None
        assert extensions.startswith("permessage-deflate")
        assert sink_writes["ws-deflate"] >= 2
        assert sink_writes["ws"] == 0

    async def test_replies_and_events_interleave_without_corrupting_the_stream(
        self, server: LiveServer, sink_writes: Counter[str]
    ) -> None:
        await replies_and_events_interleave(server, deflate=True)
        assert sink_writes["ws-deflate"] > 0


async def test_replies_and_events_interleave_on_a_plain_websocket(
    server: LiveServer, sink_writes: Counter[str]
) -> None:
    await replies_and_events_interleave(server, deflate=False)
    assert sink_writes["ws"] > 0


async def replies_and_events_interleave(server: LiveServer, *, deflate: bool) -> None:
    """A compressed WebSocket's messages must reach the wire in the order they were
    compressed: replies to the client's frames (through ASGI) and events (straight)
    are compressed by the same connection, at the same time."""
    session = await open_session(server)
    path = f"/sessions/{session['id']}/live"
    total, asked = 80, 80
    async with ws(server, path, deflate=deflate) as socket:

        async def ask() -> None:
            for n in range(asked):
                await socket.send({"type": "read", "seq": 1, "ref": f"r{n}"})
                await asyncio.sleep(0)

        async def write() -> None:
            for n in range(total):
                await post(server, session["id"], f"m{n} " + "y" * (n % 7) * 40)

        tasks = [asyncio.ensure_future(ask()), asyncio.ensure_future(write())]
        seqs: list[int] = []
        refs: list[str] = []
        async with asyncio.timeout(30):
            while len(seqs) < total or len(refs) < asked:
                frame = await socket.next()  # a corrupt message fails here
                if frame["event"] == "message":
                    assert frame["data"]["content"].startswith(f"m{len(seqs)} ")
                    seqs.append(frame["id"])
                elif frame["event"] in ("ack", "error"):
                    refs.append(frame["data"]["ref"])
        await asyncio.gather(*tasks)
    assert seqs == list(range(2, 2 + total))
    assert refs == [f"r{n}" for n in range(asked)]


async def test_an_http_1_0_client_gets_its_events_through_asgi(
    server: LiveServer, sink_writes: Counter[str]
) -> None:
    # HTTP/1.0 has no chunked bodies: the response is delimited by the connection's end.
    session = await open_session(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /sessions/{session['id']}/events HTTP/1.0\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding" not in head.lower()
    received = b""
    for n in range(3):
        await post(server, session["id"], f"m{n}")
        async with asyncio.timeout(10):
            while f"m{n}".encode() not in received:
                received += await reader.read(65536)
    writer.close()
    assert [event["id"] for event in parse_sse(received) if "id" in event] == ["2", "3", "4"]
    assert sink_writes["sse"] == 0


class TestDirectWritesOff:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"direct_writes": False}}

    async def test_every_event_goes_through_asgi(
        self, server: LiveServer, sink_writes: Counter[str]
    ) -> None:
        await follow_three_messages(server)
        assert sink_writes == Counter()


class TestAClientThatStopsReading:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, dict[str, Any]]:
        return {"live": {"queue_events": 5}}

    async def test_its_stream_backs_up_then_ends_and_resumes_without_loss(
        self, server: LiveServer, monkeypatch: pytest.MonkeyPatch, sink_writes: Counter[str]
    ) -> None:
        # Small kernel buffers at both ends: the connection backs up after a few events
        # rather than after megabytes.
        find = live_sinks._transport

        def with_a_small_send_buffer(stream_type: type[Any]) -> Any:
            found = find(stream_type)
            if found is not None:
                sock = found[-1].get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            return found

        monkeypatch.setattr(live_sinks, "_transport", with_a_small_send_buffer)
        session = await open_session(server)
        path = f"/sessions/{session['id']}/events"
        reader, writer = await stalled_client(server.port, path)
        state = app_state(server.app)
        for n in range(60):  # about 3 KB each: 180 KB for a client that reads 2 KB
            await messages.post_message(
                state.db,
                local_principal(),
                publish=state.live.publish,
                session_id=uuid.UUID(session["id"]),
                content=f"{n} " + "x" * 3000,
                author_type=AuthorType.CUSTOMER,
            )
        body = await read_chunked_body(reader)
        writer.close()
        events = parse_sse(body)
        ids = [int(event["id"]) for event in events if event["event"] == "message"]
        assert events[-1] == {"event": "close", "data": '{"reason":"overflow"}'}
        assert ids == list(range(2, 2 + len(ids)))  # in order, none missing
        assert 0 < sink_writes["sse"] < len(ids) < 60  # written, then queued, then closed
        async with (
            server.client() as client,
            sse(client, path, **{"Last-Event-ID": str(ids[-1])}) as resumed,
        ):
            rest = [int((await resumed.next()).id or 0) for _ in range(61 - ids[-1])]
        assert ids + rest == list(range(2, 62))


async def stalled_client(port: int, path: str) -> tuple[asyncio.StreamReader, Any]:
    """An SSE request from a client that reads 2 KB, then nothing until asked."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # The reader stops taking from the socket beyond twice its limit.
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    return reader, writer


async def read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    """The rest of a chunked body, up to its last chunk."""
    body = b""
    async with asyncio.timeout(30):
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            if size == 0:
                await reader.readexactly(2)
                return body
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"


def parse_sse(body: bytes) -> list[dict[str, str]]:
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and ": " in line)
        if "event" in fields:
            events.append(fields)
    return events


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
    # The stream's task falls behind: the queue fills with what fits, and the stream ends.
    subscription.offer([message(4), message(5), message(6), message(7)])
    assert subscription.closed is CloseReason.OVERFLOW
    subscription.offer([message(8)])
    assert [event.position for event in subscription.take_queued()] == [4, 5, 6]
    with pytest.raises(StreamClosed):
        await subscription.next()


async def test_a_sink_that_fails_hands_its_events_to_the_stream() -> None:
    class BrokenSink:
        def write(self, events: Sequence[LiveEvent]) -> bool:
            raise RuntimeError("the connection broke")

    subscription = Subscription(staff=True, limit=3, sink=BrokenSink())
    subscription.cursor = 0
    task = await waiting(subscription)
    subscription.offer([message(1)])  # no exception for the feed that hands it out
    first = await task
    assert first is not None
    assert first.position == 1


class FakeTransport:
    def __init__(self) -> None:
        self.data = b""
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def compressed_sink(
    connection: WsConnection, transport: FakeTransport, lock: asyncio.Lock
) -> live_sinks._CompressedWebSocketSink:
    """The sink of an open WebSocket on ``connection`` (a message's text: its id)."""
    stream = SimpleNamespace(
        closed=False, state=ASGIWebsocketState.CONNECTED, connection=connection
    )
    return live_sinks._CompressedWebSocketSink(
        stream,  # type: ignore[arg-type]
        transport,  # type: ignore[arg-type]
        lock,
        lambda event: f'{{"id":{event.position}}}',
    )


async def test_a_compressed_websocket_is_not_written_while_a_message_waits_for_the_lock() -> None:
    # A message that Hypercorn has compressed and not yet written (it waits for the
    # connection's send lock) must go out before the next one compressed.
    transport, lock = FakeTransport(), asyncio.Lock()
    sink = compressed_sink(WsConnection(ConnectionType.SERVER), transport, lock)
    assert sink.write([message(1)])
    await lock.acquire()  # a write that is waiting for the client (drain)
    assert not sink.write([message(2)])
    waiting = asyncio.ensure_future(lock.acquire())  # a compressed reply, behind it
    await asyncio.sleep(0)
    lock.release()  # the reply is next, but has not run yet
    assert not lock.locked()
    assert not sink.write([message(2)])
    await waiting
    lock.release()
    assert sink.write([message(2)])
    assert transport.data.endswith(b'{"id":2}')


async def test_a_compressed_websocket_that_fails_halfway_is_cut() -> None:
    # What was compressed and never sent would leave the client unable to inflate the
    # rest: the connection ends (the client resumes), rather than go on.
    connection = WsConnection(ConnectionType.SERVER)
    sent = connection.send

    def fail_on_the_second(event: Any) -> bytes:
        if "2" in event.data:
            raise RuntimeError("compression failed")
        return sent(event)

    connection.send = fail_on_the_second  # type: ignore[method-assign]
    transport = FakeTransport()
    sink = compressed_sink(connection, transport, asyncio.Lock())
    with pytest.raises(RuntimeError):
        sink.write([message(1), message(2)])
    assert transport.aborted
    assert transport.data == b""
