"""Live events written straight to the connection, under Hypercorn's HTTP/1.1 server.

A message to a thousand subscribers is a thousand sends. Through the ASGI ``send``,
each costs a task switch, Quart's response loop and Hypercorn's send path (h11's
framing and state machine, a lock, ``drain()``): more than half of a delivery's CPU
(docs/benchmarks.md, "Live fan-out"). A sink writes the event, framed once for every
subscriber, to the connection's transport, from the loop that hands the event out.

A sink is made only where that writes the very bytes the ASGI path would: Hypercorn's
asyncio server, HTTP/1.1, and a chunked ``GET`` response or a WebSocket. Each step
from the ASGI ``send`` to the transport is checked by type; anywhere else (HTTP/2,
HTTP/1.0, another server, the test client) there is no sink and events take the ASGI
path. A WebSocket that compresses its messages (per-message deflate, which browsers
ask for) has each message compressed for it by its own wsproto connection, as
Hypercorn would; one that does not shares frames encoded once. A sink refuses to
write once the response or the WebSocket is no
longer open for data, and while the transport holds more than ``BUFFER_BYTES``
unsent: the stream's task then takes over, and the ASGI path's ``drain()`` and the
subscription's bounded queue deal with the slow client as before.

A sink writes only while the stream's task waits with nothing queued
(``Subscription.direct``), so between the ASGI path's writes, never within one: the
bytes on the wire are in the order of the events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, cast

import h11
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from chat_service.services.live import LiveEvent, Sink

# A client that has this much unsent is not keeping up: the ASGI path waits for it.
BUFFER_BYTES = 64 * 1024

Encode = Callable[[Sequence[LiveEvent]], bytes]

_TRANSPORT_METHODS = ("write", "is_closing", "get_write_buffer_size")

_SEND: ContextVar[ASGISendCallable | None] = ContextVar("asgi_send", default=None)


def register(app: Quart) -> None:
    """Keep each request's ASGI ``send`` where the live routes can find it."""
    inner = app.asgi_app

    async def asgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        _SEND.set(send)
        await inner(scope, receive, send)

    app.asgi_app = asgi_app  # type: ignore[method-assign]


def _transport(
    stream_type: type[Any],
) -> tuple[Any, H11Protocol, TCPServer, asyncio.Transport] | None:
    """The current request's stream, HTTP/1.1 protocol, server and transport."""
    stream = getattr(_SEND.get(), "__self__", None)
    if not isinstance(stream, stream_type):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, TCPServer):
        return None
    transport = server.writer.transport
    # (uvloop's transports are not asyncio.WriteTransport subclasses; they have its methods.)
    if not all(callable(getattr(transport, name, None)) for name in _TRANSPORT_METHODS):
        return None
    return stream, protocol, server, cast(asyncio.Transport, transport)


def event_stream_sink(encode: Encode) -> Sink | None:
    """A sink for the current request's event stream, or None (see the module)."""
    found = _transport(HTTPStream)
    if found is None:
        return None
    stream, protocol, _, transport = found
    connection = protocol.connection
    if (
        not isinstance(connection, h11.Connection)
        or stream.scope["method"] != "GET"
        or connection.their_http_version != b"1.1"  # HTTP/1.1: h11 sends the body chunked
    ):
        return None
    return _ChunkedSink(connection, transport, encode)


def decline_compression() -> None:
    """Accept the current WebSocket without per-message deflate, whatever it asked for.

    Hypercorn agrees to deflate whenever a client asks; a server may decline it by
    leaving the extension out of its answer (RFC 7692), which is what this does, from
    the request's handshake, before ``accept()``. Elsewhere it does nothing.
    """
    found = _transport(WSStream)
    if found is not None and not found[0].handshake.accepted:
        found[0].handshake.extensions = None


def websocket_sink(encode: Encode, text: Callable[[LiveEvent], str]) -> Sink | None:
    """A sink for the current WebSocket (once accepted), or None (see the module).

    ``encode``: events as frames on the wire, shared by the subscribers; ``text``: an
    event's message, for a WebSocket that compresses its messages.
    """
    found = _transport(WSStream)
    if found is None:
        return None
    stream, _, server, transport = found
    if not stream.handshake.extensions:
        return _WebSocketSink(stream, transport, encode)
    if not hasattr(server.send_lock, "_waiters"):
        return None  # an asyncio.Lock that does not show its waiters: no telling
    return _CompressedWebSocketSink(stream, transport, server.send_lock, text)


class _ChunkedSink:
    """Writes events as chunks of an HTTP/1.1 chunked response being sent."""

    __slots__ = ("connection", "encode", "transport")

    def __init__(self, connection: h11.Connection, transport: asyncio.Transport, encode: Encode):
        self.connection = connection
        self.transport = transport
        self.encode = encode

    def write(self, events: Sequence[LiveEvent]) -> bool:
        if self.connection.our_state is not h11.SEND_BODY or not _keeping_up(self.transport):
            return False
        self.transport.write(self.encode(events))
        return True


class _WebSocketSink:
    """Writes events as frames of an open WebSocket."""

    __slots__ = ("encode", "stream", "transport")

    def __init__(self, stream: WSStream, transport: asyncio.Transport, encode: Encode):
        self.stream = stream
        self.transport = transport
        self.encode = encode

    def write(self, events: Sequence[LiveEvent]) -> bool:
        if not _open(self.stream) or not _keeping_up(self.transport):
            return False
        self.transport.write(self.encode(events))
        return True


class _CompressedWebSocketSink:
    """Writes events as messages of an open WebSocket with per-message deflate.

    Each connection compresses its messages in turn, with a context carried from one
    to the next: they must reach the wire in the order they were compressed. Hypercorn
    compresses a message, then waits for its connection's send lock to write it; so
    this sink writes only while nothing waits for that lock (an ``ack`` frame, or a
    message of the stream's own task), and else hands over to the stream's task.
    """

    __slots__ = ("lock", "stream", "text", "transport")

    def __init__(
        self,
        stream: WSStream,
        transport: asyncio.Transport,
        lock: asyncio.Lock,
        text: Callable[[LiveEvent], str],
    ):
        self.stream = stream
        self.transport = transport
        self.lock = lock
        self.text = text

    def write(self, events: Sequence[LiveEvent]) -> bool:
        lock = self.lock
        if lock.locked() or lock._waiters or not _open(self.stream):
            return False  # (a message compressed before this one waits to be written)
        if not _keeping_up(self.transport):
            return False
        texts = [self.text(event) for event in events]  # what may fail, before compressing
        send = self.stream.connection.send
        try:
            data = b"".join(send(TextMessage(data=text)) for text in texts)
        except Exception:
            # Compressed and never sent: the client could not inflate what follows.
            self.transport.abort()
            raise
        self.transport.write(data)
        return True


def _open(stream: WSStream) -> bool:
    """Whether the WebSocket is open for the application's messages."""
    return (
        not stream.closed
        and stream.state is ASGIWebsocketState.CONNECTED
        and stream.connection.state is ConnectionState.OPEN
    )


def _keeping_up(transport: asyncio.Transport) -> bool:
    """Whether the connection is open and its client reads what it is sent."""
    return not transport.is_closing() and transport.get_write_buffer_size() <= BUFFER_BYTES


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def websocket_text_frame(payload: bytes) -> bytes:
    """A whole, unmasked WebSocket text frame (a server's) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload
