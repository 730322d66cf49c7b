"""Live-delivery test plumbing: the app served by Hypercorn in the test's event loop,
and small SSE and WebSocket clients that record what they receive."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from hypercorn.asyncio import serve
from quart import Quart
from websockets.asyncio.client import ClientConnection

from chat_service.app import begin_shutdown, create_app
from chat_service.config import Settings
from chat_service.routes.state import app_state
from chat_service.server import hypercorn_config
from tests.server_process import free_port

# How long a test waits for an event that should come (generous: CI is noisy).
EVENT_SECONDS = 10.0


@dataclass
class LiveServer:
    """The application served on 127.0.0.1 by Hypercorn, in this event loop."""

    app: Quart
    port: int
    shutdown: asyncio.Event

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=EVENT_SECONDS)

    def stop(self) -> None:
        """What SIGTERM does: live streams close (1001), then the server stops."""
        begin_shutdown(self.app)
        self.shutdown.set()


@contextlib.asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """Serve ``create_app(settings)`` until the block ends."""
    app = create_app(settings)
    config = hypercorn_config(settings)
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 5
    shutdown = asyncio.Event()
    server = LiveServer(app, port, shutdown)
    task = asyncio.ensure_future(serve(app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as probe:
            for _ in range(200):
                if task.done():
                    task.result()
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the live server did not start")
        yield server
    finally:
        server.stop()
        await asyncio.wait_for(task, 30)


def db_of(server: LiveServer) -> Any:
    return app_state(server.app).db


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: Any


@dataclass
class SseClient:
    """An open ``text/event-stream``; ``events`` holds what arrived so far."""

    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    async def next(self, timeout: float = EVENT_SECONDS) -> SseEvent:
        """The next event (comments are recorded, not returned)."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> SseEvent:
        event, event_id, data = "message", None, []
        async for line in self.lines:
            if line == "":
                if data:
                    return SseEvent(event, event_id, json.loads("\n".join(data)))
                event, event_id = "message", None
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
        raise EOFError("the stream ended")

    async def until(self, kind: str, timeout: float = EVENT_SECONDS) -> SseEvent:
        """Skip events up to the next of ``kind``."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._next()
                if event.event == kind:
                    return event


@contextlib.asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, **headers: str) -> AsyncIterator[SseClient]:
    """Open an SSE stream; fails unless it answers 200 ``text/event-stream``."""
    async with client.stream("GET", path, headers=headers, timeout=None) as response:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"{response.status_code}: {response.text}")
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseClient(response, response.aiter_lines())


async def sse_refused(client: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    """The answer to an SSE request that must not start a stream."""
    async with client.stream("GET", path, headers=headers, timeout=EVENT_SECONDS) as response:
        await response.aread()
        assert response.status_code != 200, "the stream started"
        return response


@dataclass
class WsClient:
    """An open WebSocket; frames are parsed JSON."""

    connection: ClientConnection

    async def next(self, timeout: float = EVENT_SECONDS) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.connection.recv(), timeout)
        parsed: dict[str, Any] = json.loads(frame)
        return parsed

    async def until(self, kind: str, timeout: float = EVENT_SECONDS) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame["event"] == kind:
                    return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def until_closed(self, timeout: float = EVENT_SECONDS) -> list[dict[str, Any]]:
        """Every frame up to the server's close (``connection.close_code`` says why)."""
        frames = []
        async with asyncio.timeout(timeout):
            try:
                while True:
                    frames.append(await self.next(timeout))
            except websockets.ConnectionClosed:
                return frames


@contextlib.asynccontextmanager
async def ws(
    server: LiveServer, path: str, *, deflate: bool = False, **headers: str
) -> AsyncIterator[WsClient]:
    """Open a WebSocket; ``deflate``: offer per-message deflate, as browsers do."""
    async with websockets.connect(
        server.ws_url + path,
        additional_headers=headers,
        open_timeout=EVENT_SECONDS,
        compression="deflate" if deflate else None,
    ) as connection:
        yield WsClient(connection)


async def ws_close_code(server: LiveServer, path: str, **headers: str) -> tuple[int, str]:
    """(code, reason) of a WebSocket the server closes before sending any event."""
    async with websockets.connect(
        server.ws_url + path, additional_headers=headers, open_timeout=EVENT_SECONDS
    ) as connection:
        with contextlib.suppress(websockets.ConnectionClosed):
            frame = await asyncio.wait_for(connection.recv(), EVENT_SECONDS)
            raise AssertionError(f"the server sent {frame!r} instead of closing")
        await asyncio.wait_for(connection.wait_closed(), EVENT_SECONDS)
        assert connection.close_code is not None, "no close frame from the server"
        return connection.close_code, connection.close_reason or ""
