"""The event bus: in-process, PostgreSQL LISTEN/NOTIFY, or Redis pub/sub.

Every process hears every notice of every tenant on one channel and hands it to its
own subscribers (the live hub). A process delivers its own notices to its own
subscribers at once, without the bus; what comes back from the bus with its own
origin is dropped.

The bus never decides what a client receives: after a reconnection it asks the hub to
re-read every live session (``on_resync``), so a notice lost while disconnected delays
nothing beyond the reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

log = logging.getLogger(__name__)

# Notices waiting for a disconnected bus, at most: beyond that the oldest are dropped
# (other processes' subscribers then catch up at their next resync).
MAX_PENDING = 10_000
# An idle listening connection is checked this often, so a half-open one is noticed.
PING_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
LISTENER_APPLICATION_NAME = "chat-service-live"


class NoticeKind(enum.StrEnum):
    """What a notice is about."""

    MESSAGE = "message"  # messages (or events) committed up to ``seq``
    UPDATED = "updated"  # the message at ``seq`` was edited or deleted
    SESSION = "session"  # the session was opened or its case changed
    TYPING = "typing"  # ``actor`` is typing (never stored)
    READ = "read"  # ``actor`` has read up to ``seq`` (stored)


@dataclass(frozen=True, slots=True)
class Notice:
    """A small notification; what it refers to is read from the database."""

    kind: NoticeKind
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    seq: int = 0
    actor: str | None = None  # typing and read: who (customer, agent, service, local)
    actor_id: uuid.UUID | None = None


def encode_notice(notice: Notice, origin: str) -> str:
    """The notice as a compact JSON payload (well under NOTIFY's 8000 bytes)."""
    body: dict[str, Any] = {
        "o": origin,
        "k": notice.kind.value,
        "t": notice.tenant_id.hex,
        "s": notice.session_id.hex,
        "q": notice.seq,
    }
    if notice.actor is not None:
        body["a"] = notice.actor
    if notice.actor_id is not None:
        body["i"] = notice.actor_id.hex
    return json.dumps(body, separators=(",", ":"))


def decode_notice(payload: str | bytes) -> tuple[str, Notice]:
    """(origin, notice) from a payload.

    Raises:
        ValueError: not a payload this service wrote.
    """
    try:
        body = json.loads(payload)
        actor_id = body.get("i")
        return body["o"], Notice(
            NoticeKind(body["k"]),
            uuid.UUID(hex=body["t"]),
            uuid.UUID(hex=body["s"]),
            int(body["q"]),
            body.get("a"),
            None if actor_id is None else uuid.UUID(hex=actor_id),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a notice: {error}") from None


# Publishes notices after COMMIT (``LiveHub.publish``): what services are handed.
Publisher = Callable[[Sequence[Notice]], None]
OnNotice = Callable[[Notice], None]
OnResync = Callable[[], None]


class Bus:
    """Carries notices between processes; this base class is the in-process bus."""

    name = "memory"

    def __init__(self) -> None:
        self.origin = secrets.token_hex(8)
        self._on_notice: OnNotice = _ignore
        self._on_resync: OnResync = _nothing

    def attach(self, on_notice: OnNotice, on_resync: OnResync) -> None:
        """Where notices from other processes go, and whom to tell after a reconnection."""
        self._on_notice = on_notice
        self._on_resync = on_resync

    @property
    def connected(self) -> bool:
        """Whether notices from other processes arrive right now."""
        return True

    async def start(self) -> None:
        """Connect (in the background: serving does not wait for the bus)."""

    async def close(self) -> None:
        """Disconnect."""

    def publish(self, notices: Sequence[Notice]) -> None:
        """Send ``notices`` to the other processes, in the background."""

    def _received(self, payload: str | bytes) -> None:
        try:
            origin, notice = decode_notice(payload)
        except ValueError as error:
            log.warning("ignored a payload on the event channel: %s", error)
            return
        if origin != self.origin:
            self._on_notice(notice)


MemoryBus = Bus


class _RemoteBus(Bus):
    """A bus with a listening connection that reconnects with backoff.

    Notices to publish wait in a queue that survives a reconnection.
    """

    def __init__(self, channel: str, *, reconnect_max_seconds: float) -> None:
        super().__init__()
        self.channel = channel
        self.reconnect_max_seconds = reconnect_max_seconds
        self._pending: dict[tuple[NoticeKind, uuid.UUID] | int, str] = {}
        self._serial = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._closing = False

    @property
    def connected(self) -> bool:
        """Whether the listening connection is up."""
        return self._connected

    async def start(self) -> None:
        """Start listening (and reconnecting) in the background."""
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop listening and drop the connection."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish(self, notices: Sequence[Notice]) -> None:
        """Queue ``notices``; a session's newer message notice replaces an older one."""
        for notice in notices:
            payload = encode_notice(notice, self.origin)
            if notice.kind in (NoticeKind.MESSAGE, NoticeKind.SESSION):
                key: tuple[NoticeKind, uuid.UUID] | int = (notice.kind, notice.session_id)
                self._pending.pop(key, None)  # to the end: keeps the order of news
            else:
                self._serial += 1
                key = self._serial
            self._pending[key] = payload
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
            log.warning("event bus: dropped a notice (too many waiting)")
        self._wake.set()

    def _take_pending(self) -> list[str]:
        payloads = list(self._pending.values())
        self._pending.clear()
        self._wake.clear()
        return payloads

    def _put_back(self, payloads: list[str]) -> None:
        # Not sent: in front of whatever came since, each under a key of its own.
        restored: dict[tuple[NoticeKind, uuid.UUID] | int, str] = {}
        for payload in payloads:
            self._serial += 1
            restored[self._serial] = payload
        restored.update(self._pending)
        self._pending = restored

    async def _run(self) -> None:
        while not self._closing:
            # Backoff across whole connect-and-listen cycles: a connection that fails
            # soon after it opened waits longer each time; one that lasted starts over.
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(
                    multiplier=0.05, jitter=0.1, max=self.reconnect_max_seconds
                ),
                retry=retry_if_exception_type(Exception),
                before_sleep=lambda state: log.warning(
                    "event bus (%s): connection failed (%s); retrying",
                    self.name,
                    type(state.outcome.exception()).__name__ if state.outcome else "?",
                ),
            )
            async for attempt in retrying:
                with attempt:
                    await self._cycle()

    async def _cycle(self) -> None:
        """Connect and listen until the connection is lost.

        Returns when the connection lasted (the next cycle starts without delay);
        raises when it failed early (the next one waits).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._connect()
            await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("event bus (%s): connection lost (%s)", self.name, type(error).__name__)
            if loop.time() - started < PING_SECONDS:
                raise
        finally:
            self._connected = False
            await self._disconnect()

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _serve(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    def _listening(self) -> None:
        self._connected = True
        log.info("event bus (%s): listening on %s", self.name, self.channel)
        # Whatever was published while this process was not listening: read it now.
        self._on_resync()


class PostgresBus(_RemoteBus):
    """LISTEN/NOTIFY on one connection per process, which also sends the notices."""

    name = "postgres"

    def __init__(self, dsn: str, channel: str, *, reconnect_max_seconds: float = 10.0) -> None:
        super().__init__(channel, reconnect_max_seconds=reconnect_max_seconds)
        self.dsn = dsn
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()

    async def _connect(self) -> None:
        # One event per connection: a closing connection's listener must not mark the
        # next one lost.
        lost = self._lost = asyncio.Event()
        connection = await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            # Operators (and tests) tell the listening connections apart by this name.
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        self._connection = connection
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(self.channel, self._on_payload)
        except BaseException:
            connection.terminate()
            raise

    def _on_payload(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._received(payload)

    async def _serve(self) -> None:
        connection = self._connection
        assert connection is not None  # noqa: S101 - set by _connect
        self._listening()
        while not self._lost.is_set():
            if not self._pending:
                wake = asyncio.ensure_future(self._wake.wait())
                lost = asyncio.ensure_future(self._lost.wait())
                try:
                    done, _ = await asyncio.wait(
                        {wake, lost}, timeout=PING_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    wake.cancel()
                    lost.cancel()
                if not done:
                    await connection.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)
                continue
            payloads = self._take_pending()
            try:
                # One statement, one round trip, all or nothing.
                await connection.execute(
                    "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
                    self.channel,
                    payloads,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                )
            except BaseException:
                self._put_back(payloads)
                raise
        raise ConnectionError("the listening connection was closed")

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()


class RedisBus(_RemoteBus):
    """Redis pub/sub: one subscribed connection per process, publishing on another."""

    name = "redis"

    def __init__(self, url: str, channel: str, *, reconnect_max_seconds: float = 10.0) -> None:
        super().__init__(channel, reconnect_max_seconds=reconnect_max_seconds)
        self.url = url
        self._client: Any = None
        self._pubsub: Any = None

    async def _connect(self) -> None:
        # Imported here: redis-py takes a noticeable part of a second to import, and
        # only this bus needs it.
        import redis.asyncio as aioredis

        client = aioredis.from_url(
            self.url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=PING_SECONDS + CONNECT_TIMEOUT_SECONDS,
            health_check_interval=PING_SECONDS,
        )
        self._client = client
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        try:
            await pubsub.subscribe(self.channel)
        except BaseException:
            await self._disconnect()
            raise

    async def _serve(self) -> None:
        assert self._client is not None  # noqa: S101 - set by _connect
        self._listening()
        reader = asyncio.ensure_future(self._read())
        try:
            while not reader.done():
                if not self._pending:
                    wake = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait({wake, reader}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        wake.cancel()
                    continue
                payloads = self._take_pending()
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for payload in payloads:
                            pipe.publish(self.channel, payload)
                        await pipe.execute()
                except BaseException:
                    self._put_back(payloads)
                    raise
            reader.result()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=PING_SECONDS)
            if message is None:
                # Quiet: ask the server, so a dead connection is noticed.
                await self._pubsub.ping()
                continue
            if message.get("type") == "message":
                self._received(message["data"])

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


def _ignore(_notice: Notice) -> None:
    pass


def _nothing() -> None:
    pass
