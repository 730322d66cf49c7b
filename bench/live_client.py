"""Many live subscribers in one process, for the fan-out benchmark (bench/fanout.py).

    python -m bench.live_client --port 8080 --path /sessions/<id>/events --transport sse \
        --connections 500 --result records.pickle

Each connection is a raw non-blocking socket: an HTTP/1.1 request (SSE) or a WebSocket
handshake (ws), then the bytes as they come, with no HTTP or WebSocket library in the
way. SSE is de-chunked and split on blank lines; a WebSocket's (unmasked) server frames
are cut by their length. Of a `message` event only its seq is parsed (the first "seq"
of its data), never the rest of its JSON. Every read takes the kernel's receive
timestamp of its data (SO_TIMESTAMPNS, CLOCK_REALTIME): on loopback the kernel stamps a
segment when the server sends it, so the time an event is recorded as delivered does
not depend on how soon this process gets to read it. The time of the read itself is
recorded as well.

On stdout: ``ready {json}`` once every connection is open (or has failed); then, on
``stop <seq>`` from stdin, it waits until every connection has seen ``seq`` (or
``--drain`` seconds), writes its records to ``--result`` (pickle) and prints ``done
{json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pickle
import resource
import select
import socket
import struct
import sys
import time
import zlib
from array import array
from pathlib import Path
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
MESSAGE_EVENT = b"event: message\n"
WS_MESSAGE_PREFIX = b'{"event":"message",'
SEQ_FIELD = b'"seq":'
DEFLATE_TAIL = b"\x00\x00\xff\xff"
RECV_BYTES = 65536


class Connection:
    """One subscriber: its socket, its parser state and what it received."""

    __slots__ = (
        "chunk_left",
        "closed",
        "error",
        "events",
        "inflater",
        "kernel",
        "raw",
        "read",
        "seqs",
        "sock",
        "transport",
    )

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.sock: socket.socket | None = None
        self.raw = bytearray()  # undecoded bytes (chunked SSE, or WebSocket frames)
        self.events = bytearray()  # de-chunked SSE text not yet split into events
        self.chunk_left = -1  # SSE: bytes left in the current chunk (-1: a size line next)
        self.seqs = array("q")
        self.kernel = array("d")  # kernel receive timestamps (time.time() clock)
        self.read = array("d")  # when this process read them
        self.closed = False
        self.error = ""
        # wsz: per-message deflate, with the context carried from message to message.
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)

    def feed(self, data: bytes, kernel: float, read: float) -> None:
        self.raw += data
        if self.transport == "sse":
            self._dechunk()
            self._sse_events(kernel, read)
        else:
            self._ws_frames(kernel, read)

    def _dechunk(self) -> None:
        raw, position = self.raw, 0
        while True:
            if self.chunk_left < 0:
                end = raw.find(b"\r\n", position)
                if end < 0:
                    break
                size = int(bytes(raw[position:end]).split(b";")[0], 16)
                position = end + 2
                if size == 0:
                    self.closed = True
                    break
                self.chunk_left = size + 2  # the chunk and its CRLF
            if len(raw) - position < self.chunk_left:
                break
            self.events += raw[position : position + self.chunk_left - 2]
            position += self.chunk_left
            self.chunk_left = -1
        del raw[:position]

    def _sse_events(self, kernel: float, read: float) -> None:
        text, position = self.events, 0
        while True:
            end = text.find(b"\n\n", position)
            if end < 0:
                break
            # "id: <seq>" (session streams; none on tenant streams), "event: message",
            # then the message's JSON, whose first "seq" is its seq.
            kind = text.find(MESSAGE_EVENT, position, end)
            if kind >= 0:
                self._record(text, kind + len(MESSAGE_EVENT), kernel, read)
            elif text.startswith(b"event: close", position):
                self.closed = True
            position = end + 2
        del text[:position]

    def _ws_frames(self, kernel: float, read: float) -> None:
        raw, position = self.raw, 0
        while len(raw) - position >= 2:
            opcode = raw[position] & 0x0F
            length = raw[position + 1] & 0x7F
            header = 2
            if length == 126:
                if len(raw) - position < 4:
                    break
                length = int.from_bytes(raw[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if len(raw) - position < 10:
                    break
                length = int.from_bytes(raw[position + 2 : position + 10], "big")
                header = 10
            if len(raw) - position < header + length:
                break
            start = position + header
            if opcode == 1 and raw[position] & 0x40:  # compressed (RSV1)
                text = bytearray(
                    self.inflater.decompress(bytes(raw[start : start + length]) + DEFLATE_TAIL)
                )
                if text.startswith(WS_MESSAGE_PREFIX):
                    self._record(text, len(WS_MESSAGE_PREFIX), kernel, read)
            elif opcode == 1 and raw.startswith(WS_MESSAGE_PREFIX, start):
                self._record(raw, start + len(WS_MESSAGE_PREFIX), kernel, read)
            elif opcode == 8:
                self.closed = True
            position = start + length
        del raw[:position]

    def _record(self, text: bytearray, start: int, kernel: float, read: float) -> None:
        field = text.find(SEQ_FIELD, start)
        digits = field + len(SEQ_FIELD)
        end = digits
        while 48 <= text[end] <= 57:  # ASCII digits
            end += 1
        self.seqs.append(int(text[digits:end]))
        self.kernel.append(kernel)
        self.read.append(read)

    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0


def raise_open_files(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def request_bytes(transport: str, host: str, port: int, path: str) -> bytes:
    if transport == "sse":
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
            "Cache-Control: no-store",
        ]
    else:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if transport == "wsz":  # as browsers ask
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_connection(connection: Connection, host: str, port: int, path: str) -> None:
    """Connect, send the request and read the answer's head; leftover bytes are fed."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, request_bytes(connection.transport, host, port, path))
        head = b""
        while b"\r\n\r\n" not in head:
            data = await loop.sock_recv(sock, RECV_BYTES)
            if not data:
                raise ConnectionError("closed before answering")
            head += data
    except BaseException:
        sock.close()
        raise
    head, _, rest = head.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    expected = b" 200 " if connection.transport == "sse" else b" 101 "
    if expected not in status + b" ":
        sock.close()
        raise ConnectionError(status.decode(errors="replace"))
    if connection.transport == "wsz" and b"permessage-deflate" not in head.lower():
        sock.close()  # the server declined it: this would measure a plain WebSocket
        raise ConnectionError("per-message deflate was not agreed")
    # From here on, every read carries the kernel's receive timestamp.
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    connection.sock = sock
    if rest:
        now = time.time()
        connection.feed(rest, now, now)


def on_readable(connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
    sock = connection.sock
    assert sock is not None  # noqa: S101 - only registered once open
    try:
        data, ancillary, _flags, _address = sock.recvmsg(RECV_BYTES, 64)
    except BlockingIOError:
        return
    except OSError as error:
        data, ancillary = b"", []
        connection.error = type(error).__name__
    read = time.time()
    if not data:
        connection.closed = True
        with contextlib.suppress(ValueError):
            loop.remove_reader(sock.fileno())
        return
    connection.feed(data, kernel_time(ancillary, read), read)


def kernel_time(ancillary: list[tuple[int, int, bytes]], default: float) -> float:
    """The kernel's receive timestamp in ``recvmsg``'s ancillary data (SO_TIMESTAMPNS)."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return float(seconds + nanoseconds / 1e9)
    return default


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    connections = [Connection(args.transport) for _ in range(args.connections)]
    limit = asyncio.Semaphore(args.concurrency)
    failures: list[str] = []

    async def connect(connection: Connection) -> None:
        async with limit:
            try:
                async with asyncio.timeout(args.timeout):
                    await open_connection(connection, args.host, args.port, args.path)
            except Exception as error:
                connection.error = f"{type(error).__name__}: {error}"
                failures.append(connection.error)
                return
            assert connection.sock is not None  # noqa: S101
            if poller is None:
                loop.add_reader(connection.sock.fileno(), on_readable, connection, loop)
            else:
                by_fd[connection.sock.fileno()] = connection
                poller.register(connection.sock.fileno(), select.EPOLLIN)

    # With --poll-ms the sockets are not in the event loop's epoll: this process sleeps
    # and then takes whatever is ready, so a send to it never has to wake it.
    poller = select.epoll() if args.poll_ms > 0 else None
    by_fd: dict[int, Connection] = {}

    async def poll() -> None:
        assert poller is not None  # noqa: S101
        while True:
            await asyncio.sleep(args.poll_ms / 1000)
            for fd, _events in poller.poll(0):
                connection = by_fd[fd]
                on_readable(connection, loop)
                if connection.closed:
                    poller.unregister(fd)

    started = time.monotonic()
    await asyncio.gather(*(connect(connection) for connection in connections))
    polling = asyncio.ensure_future(poll()) if poller is not None else None
    opened = sum(connection.sock is not None for connection in connections)
    report(
        "ready",
        opened=opened,
        failed=len(failures),
        first_failures=failures[:3],
        seconds=round(time.monotonic() - started, 2),
    )

    command = await loop.run_in_executor(None, sys.stdin.readline)
    last = int(command.split()[1]) if command.startswith("stop") else 0
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:
        if all(c.closed or c.sock is None or c.last_seq() >= last for c in connections):
            break
        await asyncio.sleep(0.05)
    if polling is not None:
        polling.cancel()
    records = [
        {
            "seqs": connection.seqs,
            "kernel": connection.kernel,
            "read": connection.read,
            "closed": connection.closed,
            "error": connection.error,
            "open": connection.sock is not None,
        }
        for connection in connections
    ]
    for connection in connections:
        if connection.sock is not None:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(connection.sock.fileno())
            connection.sock.close()
    return records


def report(kind: str, **fields: Any) -> None:
    sys.stdout.write(f"{kind} {json.dumps(fields)}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_client", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--transport", choices=("sse", "ws", "wsz"), default="sse")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16, help="connections opening at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to open one")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait at the end")
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=0.0,
        help="read every this many ms instead of when data comes (0: when it comes)",
    )
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    raise_open_files(args.connections + 64)
    try:
        import uvloop
    except ImportError:
        records = asyncio.run(run(args))
    else:
        records = uvloop.run(run(args))
    Path(args.result).write_bytes(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
    report("done", closed=sum(record["closed"] for record in records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
