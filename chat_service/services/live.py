"""Live delivery: streams of a session's events and of a tenant's inbox changes.

Services publish a notice after their transaction commits (``LiveHub.publish``). A
notice is only a hint: each process keeps one *feed* per live session, which reads
the new messages from the database once, in ``seq`` order, and hands them to every
subscriber of that session in the process. A subscriber that starts, or resumes,
behind the feed reads what it missed from the database first, then takes the feed's
events, skipping what it already has: nothing is lost or repeated at the switch.

Why that holds: a session's sequence numbers are taken under its row lock (the write
lock on SQLite) and committed in order, so the committed messages of a session are
always ``1..N`` with no hole. A subscriber joins the feed before it reads; the feed
delivers everything above its position at that moment, and the subscriber's read
reaches at least that position.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, func, select

from chat_service.errors import InvalidField, NotFound
from chat_service.model import Database, Visibility, utc_now
from chat_service.realtime import Bus, Notice, NoticeKind
from chat_service.services.access import Principal, Scope
from chat_service.services.sessions import (
    MESSAGE_COLUMNS,
    MESSAGES,
    SESSION_COLUMNS,
    SESSIONS,
    TAGS,
    visible_to,
)
from chat_service.services.views import MessageView, SessionRow

log = logging.getLogger(__name__)

# Messages read per statement, when a feed or a subscriber catches up.
READ_BATCH = 200
# A resumed tenant stream replays at most this many sessions; beyond, it asks the
# client to reload its inbox.
TENANT_REPLAY_MAX = 500
# Messages of one session shown in a tenant stream per notice, at most (previews).
TENANT_MESSAGES_MAX = 20
# Sessions whose last delivered seq a tenant feed remembers.
TENANT_KNOWN_MAX = 10_000
# A feed that could not read the database tries again after this long.
RETRY_SECONDS = 1.0


class EventKind(enum.StrEnum):
    """What a live event is."""

    MESSAGE = "message"  # a new message or event, in seq order
    MESSAGE_UPDATED = "message.updated"  # an earlier message was edited or deleted
    TYPING = "typing"
    READ = "read"
    SESSION = "session"  # a session's state (tenant streams)
    RESYNC = "resync"  # too much was missed: reload from the REST API


class CloseReason(enum.StrEnum):
    """Why the server ends a stream."""

    OVERFLOW = "overflow"  # the client did not keep up
    SHUTDOWN = "shutdown"  # the server is stopping


class StreamClosed(Exception):
    """The server ends the stream; the client may resume from its last ``seq``."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Activity:
    """Typing or reading: who, where, and (reads) up to which seq."""

    session_id: uuid.UUID
    actor: str
    actor_id: uuid.UUID | None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session's row and tags, as the inbox shows it."""

    session: SessionRow
    tags: Sequence[str]


@dataclass(slots=True, eq=False)
class LiveEvent:
    """One event for one or many subscribers.

    ``cache`` holds its encodings, so a thousand subscribers share one. ``position``
    is what a client resumes from: the seq (session streams) or an inbox position
    (tenant streams); None for events that are not replayed.
    """

    kind: EventKind
    payload: MessageView | Activity | SessionState | None
    position: int | None = None
    internal: bool = False
    cache: dict[Any, Any] = field(default_factory=dict)


class Sink(Protocol):
    """A connection that can take a subscriber's events at once, without its task.

    Handing an event to a thousand waiting tasks costs a task switch and the web
    server's send path for each; a sink writes it to the connection there and then.
    """

    def write(self, events: Sequence[LiveEvent]) -> bool:
        """Write ``events`` now, in one piece; False when it cannot (backed up, or gone)."""
        ...


class Subscription:
    """One live connection's queue of events: bounded, closed when it overflows.

    Waking a waiting connection costs one future: a thousand of them wake for every
    message. Heartbeats come from the hub's ticker (``due``), not from a timer per
    wait. With a ``sink``, the events that come while the stream waits with nothing
    queued are written straight to the connection (``direct``); once a write is
    refused (the client is slow), they queue for the stream's task as before.
    ``cursor``: the last seq the stream has sent, for streams that skip a message
    they already sent (None: no such check).
    """

    __slots__ = (
        "active",
        "closed",
        "cursor",
        "direct",
        "due",
        "events",
        "limit",
        "loop",
        "sink",
        "staff",
        "waiter",
    )

    def __init__(self, *, staff: bool, limit: int, sink: Sink | None = None) -> None:
        self.staff = staff
        self.limit = limit
        self.sink = sink
        self.events: collections.deque[LiveEvent] = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[None] | None = None
        self.closed: CloseReason | None = None
        self.active = False  # an event came since the ticker's last look
        self.due = False  # a heartbeat is due
        self.direct = False  # the stream waits with nothing queued: write to the sink
        self.cursor: int | None = None

    def offer(self, events: Sequence[LiveEvent]) -> None:
        """Take the ``events`` this subscriber may see: write them, or queue them.

        Closes the stream when its queue is full.
        """
        if self.closed is not None:
            return
        cursor = self.cursor
        kept = []
        for event in events:
            if event.internal and not self.staff:
                continue
            if cursor is not None and event.kind is EventKind.MESSAGE:
                if event.position is None or event.position <= cursor:
                    continue  # already sent
                cursor = event.position
            kept.append(event)
        if not kept:
            return
        # All of them: the hand-out's own list, whose encoding subscribers share.
        wanted = events if len(kept) == len(events) else kept
        self.active = True
        self.due = False
        if self.direct:
            if self._write(wanted):
                self.cursor = cursor
                return
            self.direct = False  # backed up: the stream's task takes over, in order
        room = self.limit - len(self.events)
        self.events.extend(wanted[:room])
        if len(wanted) > room:
            self.close(CloseReason.OVERFLOW)
        else:
            self._wake()

    def _write(self, events: Sequence[LiveEvent]) -> bool:
        if self.sink is None:
            return False
        try:
            return self.sink.write(events)
        except Exception:
            # This connection's trouble: its stream's task sends them, or fails alone.
            log.exception("a live event could not be written to its connection")
            return False

    def close(self, reason: CloseReason) -> None:
        """End the stream once the queued events are taken."""
        if self.closed is None:
            self.closed = reason
            self._wake()

    def tick(self) -> None:
        """The hub's heartbeat ticker: a heartbeat is due if nothing came since last time."""
        if self.active:
            self.active = False
        else:
            self.due = True
            self._wake()

    def _wake(self) -> None:
        self.direct = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> LiveEvent | None:
        """The next event; None when a heartbeat is due instead.

        While it waits, events go straight to the sink, if there is one.

        Raises:
            StreamClosed: the subscription was closed and its queue is empty.
        """
        while not self.events:
            if self.closed is not None:
                raise StreamClosed(self.closed)
            if self.due:
                self.due = False
                return None
            self.waiter = self.loop.create_future()
            self.direct = self.sink is not None
            try:
                await self.waiter
            finally:
                self.direct = False
                self.waiter = None
        return self.events.popleft()

    def take_queued(self) -> list[LiveEvent]:
        """The events already queued, without waiting (to send them in one write)."""
        events = list(self.events)
        self.events.clear()
        return events


# -- statements, built once --------------------------------------------------------

_LAST_SEQ = select(SESSIONS.c.last_seq).where(
    SESSIONS.c.id == bindparam("session_id"), SESSIONS.c.tenant_id == bindparam("tenant_id")
)
_AFTER_BASE = (
    select(*MESSAGE_COLUMNS)
    .where(MESSAGES.c.session_id == bindparam("session_id"), MESSAGES.c.seq > bindparam("after"))
    .order_by(MESSAGES.c.seq)
    .limit(bindparam("limit"))
)
_AFTER = {customer: visible_to(_AFTER_BASE, customer=customer) for customer in (False, True)}
_AT = (
    select(*MESSAGE_COLUMNS)
    .where(
        MESSAGES.c.session_id == bindparam("session_id"),
        MESSAGES.c.seq.in_(bindparam("seqs", expanding=True)),
    )
    .order_by(MESSAGES.c.seq)
)
_LAST_SEQS = select(SESSIONS.c.id, SESSIONS.c.last_seq).where(
    SESSIONS.c.id.in_(bindparam("ids", expanding=True))
)
_TAG_LIST = (
    select(func.aggregate_strings(TAGS.c.tag, " "))
    .where(TAGS.c.session_id == SESSIONS.c.id)
    .scalar_subquery()
)
_STATES = select(*SESSION_COLUMNS, _TAG_LIST).where(
    SESSIONS.c.id.in_(bindparam("ids", expanding=True)),
    SESSIONS.c.tenant_id == bindparam("tenant_id"),
)
_CHANGED_SINCE = (
    select(*SESSION_COLUMNS, _TAG_LIST)
    .where(
        SESSIONS.c.tenant_id == bindparam("tenant_id"),
        SESSIONS.c.last_activity_at >= bindparam("since"),
    )
    .order_by(SESSIONS.c.last_activity_at, SESSIONS.c.id)
    .limit(TENANT_REPLAY_MAX + 1)
)


def _state(row: Any) -> SessionState:
    return SessionState(SessionRow(*row[:-1]), sorted((row[-1] or "").split()))


def inbox_position(moment: datetime) -> int:
    """A tenant stream's position: a session's last activity in microseconds."""
    return math.floor(moment.timestamp() * 1_000_000)


def _message_event(
    message: MessageView, kind: EventKind = EventKind.MESSAGE, *, resumable: bool = True
) -> LiveEvent:
    """A message's event; ``resumable``: its seq is the position a client resumes from."""
    return LiveEvent(
        kind,
        message,
        position=message.seq if kind is EventKind.MESSAGE and resumable else None,
        internal=message.visibility is Visibility.INTERNAL,
    )


def _session_event(state: SessionState) -> LiveEvent:
    return LiveEvent(
        EventKind.SESSION, state, position=inbox_position(state.session.last_activity_at)
    )


async def _last_seq(db: Database, tenant_id: uuid.UUID, session_id: uuid.UUID) -> int | None:
    """The session's last seq; None when the tenant has no such session."""
    params = {"session_id": session_id, "tenant_id": tenant_id}
    last_seq: int | None = await db.run(
        lambda connection: connection.scalar(_LAST_SEQ, params), write=False
    )
    return last_seq


class _SessionFeed:
    """One process's reader of one session's new messages, shared by its subscribers."""

    def __init__(self, hub: LiveHub, session_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
        self.hub = hub
        self.session_id = session_id
        self.tenant_id = tenant_id
        self.subscribers: set[Subscription] = set()
        self.head = 0  # every message up to here has been handed out
        self.target = 0  # a notice said there is news up to here
        self.dirty = False  # read whatever is there, notice or not
        self.updated: set[int] = set()
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(_retrieve)
        self._pump: asyncio.Task[None] | None = None
        self.forgotten = False  # no subscriber left: stop reading
        self._start = asyncio.ensure_future(self._initialise())

    async def _initialise(self) -> None:
        try:
            last_seq = await _last_seq(self.hub.db, self.tenant_id, self.session_id)
        except Exception as error:
            self.hub._forget(self)
            self.ready.set_exception(error)
            return
        if last_seq is None:
            self.hub._forget(self)
            self.ready.set_exception(NotFound(f"session {self.session_id} does not exist"))
            return
        self.head = last_seq
        self.target = max(self.target, last_seq)
        self.ready.set_result(last_seq)
        self._kick()

    def notice(self, notice: Notice) -> None:
        if notice.kind in (NoticeKind.MESSAGE, NoticeKind.SESSION):
            self.target = max(self.target, notice.seq)
        elif notice.kind is NoticeKind.UPDATED:
            self.updated.add(notice.seq)
        elif notice.kind in (NoticeKind.TYPING, NoticeKind.READ):
            kind = EventKind.TYPING if notice.kind is NoticeKind.TYPING else EventKind.READ
            activity = Activity(
                notice.session_id,
                notice.actor or "",
                notice.actor_id,
                notice.seq if kind is EventKind.READ else None,
            )
            self._hand_out([LiveEvent(kind, activity)])
            return
        self._kick()

    def resync(self, last_seq: int | None = None) -> None:
        if last_seq is None:
            self.dirty = True
        else:
            self.target = max(self.target, last_seq)
        self._kick()

    def _kick(self) -> None:
        if not self.ready.done() or self.ready.exception() is not None or self.forgotten:
            return
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._run())

    def _hand_out(self, events: Sequence[LiveEvent]) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.offer(events)

    async def _run(self) -> None:
        db = self.hub.db
        try:
            while True:
                if self.target > self.head or self.dirty:
                    self.dirty = False
                    asked = self.target
                    params = {
                        "session_id": self.session_id,
                        "after": self.head,
                        "limit": READ_BATCH,
                    }
                    rows = await db.run(
                        lambda connection, p=params: connection.execute(_AFTER[False], p).all(),  # type: ignore[misc]
                        write=False,
                    )
                    if rows:
                        messages = [MessageView.from_row(self.session_id, row) for row in rows]
                        self.head = messages[-1].seq
                        self._hand_out([_message_event(message) for message in messages])
                    if len(rows) < READ_BATCH and self.target <= asked:
                        # All there is: a notice cannot be ahead of the database. (One
                        # that came during the read may be ahead of the read's snapshot:
                        # then the target stays above the head and the loop reads again.)
                        self.target = self.head
                    continue
                if self.updated:
                    seqs = sorted(seq for seq in self.updated if seq <= self.head)
                    # Above the head, the new message is read with its change already.
                    self.updated.clear()
                    if seqs:
                        params_at = {"session_id": self.session_id, "seqs": seqs}
                        try:
                            rows = await db.run(
                                lambda connection, p=params_at: connection.execute(_AT, p).all(),  # type: ignore[misc]
                                write=False,
                            )
                        except Exception:
                            self.updated.update(seqs)  # tried again with the retry
                            raise
                        self._hand_out(
                            [
                                _message_event(
                                    MessageView.from_row(self.session_id, row),
                                    EventKind.MESSAGE_UPDATED,
                                )
                                for row in rows
                            ]
                        )
                    continue
                return
        except Exception:
            # The database is unavailable: try again shortly (and at the next notice).
            log.warning("live feed of a session could not read its messages", exc_info=True)
            self.dirty = True
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._kick)


class _TenantFeed:
    """One process's reader of a tenant's session changes, shared by its agents."""

    def __init__(self, hub: LiveHub, tenant_id: uuid.UUID) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.subscribers: set[Subscription] = set()
        # Sessions with news: (first seq a notice named, last seq a notice named).
        self.pending: dict[uuid.UUID, tuple[int, int]] = {}
        self.known: collections.OrderedDict[uuid.UUID, int] = collections.OrderedDict()
        self.checked_at = utc_now()
        self._pump: asyncio.Task[None] | None = None

    def notice(self, notice: Notice) -> None:
        if notice.kind in (NoticeKind.MESSAGE, NoticeKind.SESSION):
            first, last = self.pending.get(notice.session_id, (notice.seq, notice.seq))
            self.pending[notice.session_id] = (min(first, notice.seq), max(last, notice.seq))
            self._kick()
        elif notice.kind is NoticeKind.READ:
            activity = Activity(notice.session_id, notice.actor or "", notice.actor_id, notice.seq)
            self._hand_out([LiveEvent(EventKind.READ, activity)])

    async def check(self) -> None:
        """Look for sessions changed since the last check (notices may have been missed).

        Reads the sessions whose last activity is at most ``tenant_replay_seconds``
        older than the previous check, and queues those beyond what this feed has
        shown. Too many for one read: the subscribers are told to reload.
        """
        now = utc_now()
        since = self.checked_at - timedelta(seconds=self.hub.tenant_replay_seconds)
        params = {"tenant_id": self.tenant_id, "since": since}
        rows = await self.hub.db.run(
            lambda connection: connection.execute(_CHANGED_SINCE, params).all(), write=False
        )
        self.checked_at = now
        if len(rows) > TENANT_REPLAY_MAX:
            self._hand_out([LiveEvent(EventKind.RESYNC, None)])
            return
        for row in rows:
            session = SessionRow(*row[:-1])
            known = self.known.get(session.id)
            if known is None or session.last_seq > known:
                first = session.last_seq if known is None else known + 1
                self.pending.setdefault(session.id, (first, session.last_seq))
        self._kick()

    def _kick(self) -> None:
        if self.pending and (self._pump is None or self._pump.done()):
            self._pump = asyncio.ensure_future(self._run())

    def _hand_out(self, events: Sequence[LiveEvent]) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.offer(events)

    async def _run(self) -> None:
        news: dict[uuid.UUID, tuple[int, int]] = {}
        try:
            while self.pending:
                ids = list(self.pending)[:READ_BATCH]
                news = {session_id: self.pending.pop(session_id) for session_id in ids}
                known = {session_id: self.known.get(session_id) for session_id in ids}
                states, messages = await self.hub.db.run(
                    lambda connection, n=news, k=known: self._read(connection, n, k),  # type: ignore[misc]
                    write=False,
                )
                for state in states:
                    # A tenant stream resumes by session states, not by seqs.
                    events = [
                        _message_event(message, resumable=False)
                        for message in messages.get(state.session.id, ())
                    ]
                    self._remember(state.session.id, state.session.last_seq)
                    self._hand_out([*events, _session_event(state)])
        except Exception:
            log.warning("live feed of a tenant could not read its sessions", exc_info=True)
            self.pending.update(news)
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._kick)

    def _read(
        self,
        connection: Connection,
        news: dict[uuid.UUID, tuple[int, int]],
        known: dict[uuid.UUID, int | None],
    ) -> tuple[list[SessionState], dict[uuid.UUID, list[MessageView]]]:
        rows = connection.execute(_STATES, {"ids": list(news), "tenant_id": self.tenant_id}).all()
        states = [_state(row) for row in rows]
        messages: dict[uuid.UUID, list[MessageView]] = {}
        for state in states:
            session_id = state.session.id
            first, _ = news[session_id]
            after = known[session_id]
            if after is None:
                after = first - 1
            after = max(after, state.session.last_seq - TENANT_MESSAGES_MAX)
            if after >= state.session.last_seq:
                continue
            params = {"session_id": session_id, "after": after, "limit": TENANT_MESSAGES_MAX}
            # Up to the state's last seq only: on PostgreSQL each statement has its own
            # snapshot, and a message committed in between would be shown again with
            # the next notice.
            messages[session_id] = [
                message
                for row in connection.execute(_AFTER[False], params)
                if (message := MessageView.from_row(session_id, row)).seq <= state.session.last_seq
            ]
        return states, messages

    def _remember(self, session_id: uuid.UUID, seq: int) -> None:
        self.known[session_id] = seq
        self.known.move_to_end(session_id)
        while len(self.known) > TENANT_KNOWN_MAX:
            self.known.popitem(last=False)


class LiveHub:
    """This process's live subscribers, their feeds, and the bus between processes."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        queue_events: int,
        heartbeat_seconds: float,
        resync_seconds: float,
        tenant_replay_seconds: float,
        typing_interval_seconds: int,
    ) -> None:
        self.db = db
        self.bus = bus
        self.queue_events = queue_events
        self.heartbeat_seconds = heartbeat_seconds
        self.resync_seconds = resync_seconds
        self.tenant_replay_seconds = tenant_replay_seconds
        # Keyed by tenant too: a foreign caller's failed attempt never touches the feed.
        self._sessions: dict[tuple[uuid.UUID, uuid.UUID], _SessionFeed] = {}
        self._tenants: dict[uuid.UUID, _TenantFeed] = {}
        self._subscriptions: set[Subscription] = set()
        self.typing_interval_seconds = typing_interval_seconds
        self._typing_limiter: Any = None
        self._background: list[asyncio.Task[None]] = []
        self._checks: set[asyncio.Task[None]] = set()
        self.stopping = False
        bus.attach(self._dispatch, self.resync)

    @property
    def connections(self) -> int:
        """Live connections held by this process."""
        return len(self._subscriptions)

    async def start(self) -> None:
        """Connect the bus and start the periodic resync."""
        await self.bus.start()
        self._background = [
            asyncio.ensure_future(self._resync_periodically()),
            asyncio.ensure_future(self._beat_periodically()),
        ]

    async def close(self) -> None:
        """End every stream, stop reading, and disconnect the bus."""
        self.shutdown()
        tasks = [*self._checks, *self._background]
        for feed in tuple(self._sessions.values()):
            self._forget(feed)
            if feed._pump is not None:
                tasks.append(feed._pump)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.bus.close()

    def shutdown(self) -> None:
        """Close every stream (going away); refuse new ones."""
        self.stopping = True
        for subscription in tuple(self._subscriptions):
            subscription.close(CloseReason.SHUTDOWN)

    # -- publishing ----------------------------------------------------------------

    def publish(self, notices: Sequence[Notice]) -> None:
        """Tell this process's subscribers, then the other processes (after COMMIT)."""
        for notice in notices:
            self._dispatch(notice)
        self.bus.publish(notices)

    def _dispatch(self, notice: Notice) -> None:
        feed = self._sessions.get((notice.tenant_id, notice.session_id))
        if feed is not None:
            feed.notice(notice)
        tenant = self._tenants.get(notice.tenant_id)
        if tenant is not None:
            tenant.notice(notice)

    def resync(self) -> None:
        """Re-read every live session: notices may have been missed."""
        for feed in tuple(self._sessions.values()):
            feed.resync()
        if self._tenants and not self._checks:  # one check at a time
            task = asyncio.ensure_future(self._check_tenants())
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _resync_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            await self._check_heads()
            await self._check_tenants()

    async def _beat_periodically(self) -> None:
        # Every half interval: a stream gets a heartbeat after between a half and a
        # whole interval without events.
        while True:
            await asyncio.sleep(self.heartbeat_seconds / 2)
            for subscription in tuple(self._subscriptions):
                subscription.tick()

    async def _check_tenants(self) -> None:
        for tenant in tuple(self._tenants.values()):
            try:
                await tenant.check()
            except Exception:
                log.warning("live resync could not read a tenant's sessions", exc_info=True)

    async def _check_heads(self) -> None:
        """Compare each live session's feed with the database (a cheap safety net)."""
        try:
            await self._compare_heads()
        except Exception:
            log.warning("live resync could not read the sessions", exc_info=True)

    async def _compare_heads(self) -> None:
        feeds = [feed for feed in self._sessions.values() if feed.ready.done()]
        for start in range(0, len(feeds), READ_BATCH):
            chunk = {feed.session_id: feed for feed in feeds[start : start + READ_BATCH]}
            # (A session id is unique across tenants: the feed's tenant is the session's.)
            rows = await self.db.run(
                lambda connection, ids=list(chunk): connection.execute(  # type: ignore[misc]
                    _LAST_SEQS, {"ids": ids}
                ).all(),
                write=False,
            )
            for session_id, last_seq in rows:
                feed = chunk[session_id]
                if last_seq > feed.head:
                    feed.resync(last_seq)

    def _typing_limit(self) -> _TypingLimit:
        if self._typing_limiter is None:
            self._typing_limiter = _TypingLimit(self.typing_interval_seconds)
        limiter: _TypingLimit = self._typing_limiter
        return limiter

    # -- subscribing -----------------------------------------------------------------

    def _subscribe(self, principal: Principal, sink: Sink | None) -> Subscription:
        subscription = Subscription(
            staff=not principal.is_customer, limit=self.queue_events, sink=sink
        )
        if self.stopping:
            subscription.close(CloseReason.SHUTDOWN)
        self._subscriptions.add(subscription)
        return subscription

    def _forget(self, feed: _SessionFeed) -> None:
        feed.forgotten = True
        key = (feed.tenant_id, feed.session_id)
        if self._sessions.get(key) is feed:
            del self._sessions[key]

    async def session_events(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        *,
        after: int | None,
        sink: Sink | None = None,
    ) -> AsyncIterator[list[LiveEvent] | None]:
        """A session's events after seq ``after`` (None: from now on), then live.

        Yields the events in batches (what is ready at once, to be sent in one
        write), and None when a heartbeat is due (after between a half and a whole
        ``heartbeat_seconds`` without an event). The first
        ``yield`` (None) comes once the caller's access is checked.

        Raises:
            Forbidden: the credential lacks ``sessions:read``.
            NotFound: no such session in the caller's reach.
            InvalidField: ``after`` is beyond the session's last seq.
            StreamClosed: the server ends the stream (the client may resume).
            Unavailable: the database cannot be used right now.
        """
        principal.check_session(session_id, Scope.SESSIONS_READ)
        key = (principal.tenant_id, session_id)
        feed = self._sessions.get(key)
        if feed is None:
            feed = self._sessions[key] = _SessionFeed(self, session_id, principal.tenant_id)
        subscription = self._subscribe(principal, sink)
        feed.subscribers.add(subscription)
        try:
            await asyncio.shield(feed.ready)
            cursor = await self._catch_up_start(principal, session_id, after)
            yield None  # access checked: the stream may start
            customer = principal.is_customer
            while True:
                params = {"session_id": session_id, "after": cursor, "limit": READ_BATCH}
                rows = await self.db.run(
                    lambda connection, p=params: connection.execute(_AFTER[customer], p).all(),  # type: ignore[misc]
                    write=False,
                )
                if rows:
                    messages = [MessageView.from_row(session_id, row) for row in rows]
                    cursor = messages[-1].seq
                    yield [_message_event(message) for message in messages]
                if len(rows) < READ_BATCH:
                    break
            subscription.cursor = cursor  # from now on, written straight to the sink too
            while True:
                first = await subscription.next()
                if first is None:
                    yield None
                    continue
                batch = []
                for event in (first, *subscription.take_queued()):
                    if event.kind is EventKind.MESSAGE:
                        if event.position is None or event.position <= subscription.cursor:
                            continue  # already sent while catching up
                        subscription.cursor = event.position
                    batch.append(event)
                if batch:
                    yield batch
        finally:
            self._subscriptions.discard(subscription)
            feed.subscribers.discard(subscription)
            if not feed.subscribers:
                self._forget(feed)

    async def _catch_up_start(
        self, principal: Principal, session_id: uuid.UUID, after: int | None
    ) -> int:
        last_seq = await _last_seq(self.db, principal.tenant_id, session_id)
        if last_seq is None:
            raise NotFound(f"session {session_id} does not exist")
        if after is None:
            return last_seq
        if after > last_seq:
            raise InvalidField(f"the session's last seq is {last_seq}", parameter="after")
        return after

    async def tenant_events(
        self, principal: Principal, *, after: int | None, sink: Sink | None = None
    ) -> AsyncIterator[list[LiveEvent] | None]:
        """The tenant's session changes and new messages (support side only).

        With ``after`` (an inbox position), first the sessions changed since then
        (and ``tenant_replay_seconds`` before it), as ``session`` events; more than
        ``TENANT_REPLAY_MAX`` give one ``resync`` event instead. Yields batches of
        events, and None when a heartbeat is due.

        Raises:
            Forbidden: customers, and credentials without ``sessions:read``.
            StreamClosed: the server ends the stream.
            Unavailable: the database cannot be used right now.
        """
        principal.require_staff(Scope.SESSIONS_READ)
        tenant = self._tenants.get(principal.tenant_id)
        if tenant is None:
            tenant = self._tenants[principal.tenant_id] = _TenantFeed(self, principal.tenant_id)
        subscription = self._subscribe(principal, sink)
        tenant.subscribers.add(subscription)
        try:
            yield None
            if after is not None:
                yield await self._tenant_replay(principal.tenant_id, after)
            while True:
                first = await subscription.next()
                yield None if first is None else [first, *subscription.take_queued()]
        finally:
            self._subscriptions.discard(subscription)
            tenant.subscribers.discard(subscription)
            if not tenant.subscribers and self._tenants.get(tenant.tenant_id) is tenant:
                del self._tenants[tenant.tenant_id]

    async def _tenant_replay(self, tenant_id: uuid.UUID, after: int) -> list[LiveEvent]:
        after = min(after, inbox_position(utc_now()))  # a position from the future: now
        since_micros = after - math.ceil(self.tenant_replay_seconds * 1_000_000)
        since = datetime.fromtimestamp(max(since_micros, 0) / 1_000_000, tz=UTC)
        rows = await self.db.run(
            lambda connection: connection.execute(
                _CHANGED_SINCE, {"tenant_id": tenant_id, "since": since}
            ).all(),
            write=False,
        )
        if len(rows) > TENANT_REPLAY_MAX:
            return [LiveEvent(EventKind.RESYNC, None)]
        return [_session_event(_state(row)) for row in rows]

    # -- ephemeral events ------------------------------------------------------------------

    async def typing(self, principal: Principal, session_id: uuid.UUID, *, checked: bool) -> bool:
        """Tell the session that the caller is typing; False when rate-limited.

        ``checked``: the caller's access to the session is already known (a live
        connection on it), so the database is not asked.

        Raises:
            Forbidden: the credential lacks ``sessions:write``.
            NotFound: no such session in the caller's reach.
            Unavailable: the database cannot be used right now.
        """
        principal.check_session(session_id, Scope.SESSIONS_WRITE)
        if not checked and await _last_seq(self.db, principal.tenant_id, session_id) is None:
            raise NotFound(f"session {session_id} does not exist")
        actor, actor_id = principal.actor
        key = f"{actor}:{actor_id}" if actor_id else f"{actor}:{session_id}"
        if not self._typing_limit().hit(str(session_id), key):
            return False
        self.publish(
            [Notice(NoticeKind.TYPING, principal.tenant_id, session_id, 0, actor, actor_id)]
        )
        return True


class _TypingLimit:
    """At most one typing event per client and session per interval (this process).

    Built on first use: the ``limits`` package takes a while to import.
    """

    def __init__(self, interval_seconds: int) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._item = RateLimitItemPerSecond(1, interval_seconds)

    def hit(self, *identifiers: str) -> bool:
        return bool(self._limiter.hit(self._item, *identifiers))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
