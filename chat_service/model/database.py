"""The engines, transactions and group commit."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

from sqlalchemy import create_engine, event, exc, inspect, make_url, text, update
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import create_async_engine

from chat_service import metrics
from chat_service.errors import IdempotencyKeyInUse, Unavailable
from chat_service.model.idempotency import HELD_BY_REQUEST, IDEMPOTENCY_KEYS

log = logging.getLogger(__name__)

# Failures that mean "the database cannot be used right now" rather than a bug: the
# server is down or restarting, the connection broke, the pool is exhausted, or
# SQLite's write lock was not free within busy_timeout.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError)

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")
# Applies a batch of writes on one connection, inside one transaction: one result per
# item, in order; an exception in the list fails that item alone (it must not have
# written anything), an exception raised fails the whole batch.
BatchWriter = Callable[[Connection, Sequence[Item]], list[Result | Exception]]
# Items per transaction at most: a bound on how long one batch holds its locks.
MAX_BATCH = 128


class ClaimRef(NamedTuple):
    """An idempotency key's row, and the token of the request that holds it."""

    row_id: str
    token: str


# The idempotency claim of the request being served. Each write transaction run on
# its behalf also marks the claim committed, in that same transaction: a request that
# dies after its write is then never run a second time. A request whose claim was
# taken over (it ran past its lease) has its write rolled back instead.
idempotency_claim: ContextVar[ClaimRef | None] = ContextVar("idempotency_claim", default=None)
_MARK_COMMITTED = update(IDEMPOTENCY_KEYS).where(HELD_BY_REQUEST).values(committed=True)


def _mark_committed(connection: Connection, claims: Sequence[ClaimRef]) -> None:
    """Mark ``claims`` committed with the write; refuse the write if one is not ours.

    Raises:
        IdempotencyKeyInUse: another request took a claim over.
    """
    for claim in claims:
        params = {"row_id": claim.row_id, "token": claim.token}
        if connection.execute(_MARK_COMMITTED, params).rowcount != 1:
            raise IdempotencyKeyInUse(
                "this request ran past its hold on the Idempotency-Key and another "
                "request with the key took over; nothing was written by this one",
                retry_after=1,
            )


# Tasks started by ``cancel_safe`` that are still running: held so they are not
# garbage-collected, and awaited by ``Database.dispose`` before the pool closes.
_in_flight: set[asyncio.Task[Any]] = set()


def _unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be used right now (try again later).

    A connection the server closed under a statement (a restart, a failover, an
    operator's pg_terminate_backend) may surface as a plain DBAPIError; SQLAlchemy
    marks it as a disconnect. So does a statement cancelled for running too long.
    """
    if isinstance(error, _UNAVAILABLE):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    # query_canceled: the statement ran past its statement_timeout.
    return error.connection_invalidated or getattr(error.orig, "sqlstate", None) == "57014"


def cancel_safe(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Awaitable[T]]:
    """Run a service call to completion even if its caller is cancelled.

    A client that disconnects makes the server cancel its request task. Cancelling a
    database call half-way can leave a connection inside an open transaction (on
    SQLite, holding the write lock), so the call runs in its own task that commits or
    rolls back as usual while the caller's cancellation goes ahead.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(fn(*args, **kwargs))
        _in_flight.add(task)
        task.add_done_callback(_settled)
        return await asyncio.shield(task)

    return wrapper


def _settled(task: asyncio.Task[Any]) -> None:
    _in_flight.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        # Seen only when the caller had gone: the caller gets the error otherwise.
        log.debug("service call finished after its caller left: %r", error)


def _sqlite_on_connect(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin), instead
        # of the sqlite3 module's implicit, statement-sniffing transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Deleted message text is overwritten in the pages it leaves, where that costs
        # no extra I/O, instead of lingering in free space.
        cursor.execute("PRAGMA secure_delete=FAST")
        cursor.close()

    return on_connect


def _sqlite_begin(connection: Connection) -> None:
    # A writer takes the write lock up front (BEGIN IMMEDIATE) so that it waits on
    # busy_timeout instead of failing with "database is locked" when it upgrades a
    # read transaction; readers use a plain deferred BEGIN and never block writers.
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The engines and the transactions the services run in.

    A service hands ``run`` a plain function of a Core ``Connection``: one function
    is one transaction, and runs the same way on both databases. On PostgreSQL it
    runs on the event loop over asyncpg (SQLAlchemy bridges the calls). On SQLite,
    whose driver blocks, a read runs on the event loop directly and a write runs
    whole in the writer thread: one hand-off per transaction, not one per statement.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
        sqlite_busy_timeout_ms: int = 10_000,
        statement_timeout_seconds: float | None = None,
        echo: bool = False,
    ) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # hide_parameters: statement parameters hold chat text, which must never reach a
        # log line or an error message. No pool_pre_ping: a ping per checkout costs a
        # round trip on every request. A broken connection is found when it is used; the
        # error invalidates the whole pool (that request answers 503), and the next
        # checkout connects afresh.
        options: dict[str, Any] = {
            "echo": echo,
            "hide_parameters": True,
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
        }
        engine_options = dict(options)
        if self.dialect == "postgresql" and statement_timeout_seconds is not None:
            # Cancelled by the server itself: a statement stuck on a lock or a slow plan
            # ends as an error (answered 503) instead of holding its request forever.
            timeout_ms = str(max(1, round(statement_timeout_seconds * 1000)))
            engine_options["connect_args"] = {"server_settings": {"statement_timeout": timeout_ms}}
        self._batchers: dict[Callable[..., Any], _GroupCommit[Any, Any]] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        # The async engine: migrations' checks, readiness, tests, and PostgreSQL's work.
        self.engine = create_async_engine(parsed, **engine_options)
        _observe_pool(self.engine.sync_engine, "async", pool_size, max_overflow)
        if self.dialect == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ValueError("SQLite needs a database file: an in-memory one is private")
            _ensure_sqlite_directory(parsed)
            on_connect = _sqlite_on_connect(sqlite_busy_timeout_ms)
            event.listen(self.engine.sync_engine, "connect", on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
            # Three connections are all it needs: reads run one at a time on the event
            # loop, long reads one at a time in the reader thread, writes one at a time
            # in the writer thread.
            sync_engine = create_engine(
                parsed.set(drivername="sqlite+pysqlite"),
                connect_args={"check_same_thread": False},
                **{**options, "pool_size": 3, "max_overflow": 0},
            )
            event.listen(sync_engine, "connect", on_connect)
            event.listen(sync_engine, "begin", _sqlite_begin)
            _observe_pool(sync_engine, "sync", 3, 0)
            self._sync_engine = sync_engine
            self._sync_writer = sync_engine.execution_options(sqlite_immediate=True)
            # SQLite has one writer at a time: this process's writes queue for its one
            # writer thread, which hands the lock over at once where SQLite's busy
            # handler would poll with growing sleeps; other processes are kept out by
            # the database lock and busy_timeout.
            self._threads = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            self._readers = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        # PostgreSQL reads run without BEGIN/COMMIT: one round trip per statement. A read
        # of several statements must not need one snapshot (each reads up to a bound it
        # already holds, such as a seq).
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def run(self, work: Callable[[Connection], T], *, write: bool, long: bool = False) -> T:
        """Run ``work(connection)`` and return what it returns.

        A write is one transaction: COMMIT when ``work`` returns, ROLLBACK when it
        raises, the write lock taken up front on SQLite (BEGIN IMMEDIATE). A read is one
        transaction on SQLite and runs in autocommit on PostgreSQL, so a read of several
        statements must not need them to see one snapshot. A ``long`` read (one that may
        scan many rows) runs off the event loop on SQLite too.

        Raises:
            Unavailable: the database cannot be reached or used right now.
        """
        claim = idempotency_claim.get() if write else None
        if claim is not None:
            work = _marking(work, claim)
        try:
            if self._sync_engine is None:
                return await self._run_async(work, write=write)
            loop = asyncio.get_running_loop()
            if not write and long:
                # SQLite releases the GIL while it steps: the loop serves other requests.
                return await loop.run_in_executor(self._readers, self._run_sync, work, False)
            if not write:
                # On the event loop itself: a WAL reader never waits for a lock, and a
                # read from the page cache takes microseconds, less than a hand-off to
                # a thread and back (which also contends for the GIL).
                return self._run_sync(work, False)
            # A writer may wait for another process's lock and waits for fsync at COMMIT:
            # that happens in the writer thread, off the event loop.
            return await loop.run_in_executor(self._threads, self._run_sync, work, True)
        except Exception as error:
            if not _unavailable(error):
                if isinstance(error, exc.DBAPIError):
                    # The driver's exception, chained under SQLAlchemy's, may quote row
                    # values (PostgreSQL's DETAIL: "Failing row contains (...)"), and a
                    # traceback in the logs shows the whole chain: chat text must not get
                    # there that way. SQLAlchemy's own message names the driver's error
                    # without the values.
                    raise error from None
                raise
            log.warning("database unavailable: %s", type(error).__name__)
            raise Unavailable("the database is not available; try again shortly") from None

    async def _run_async(self, work: Callable[[Connection], T], *, write: bool) -> T:
        if write:
            async with self.engine.begin() as connection:
                return await connection.run_sync(work)
        async with self._autocommit.connect() as connection:
            return await connection.run_sync(work)

    def _run_sync(self, work: Callable[[Connection], T], write: bool) -> T:
        assert self._sync_engine is not None  # noqa: S101 - only called on SQLite
        with (self._sync_writer if write else self._sync_engine).begin() as connection:
            return work(connection)

    async def group_commit(self, writer: BatchWriter[Item, Result], item: Item) -> Result:
        """Apply ``item`` with ``writer`` in a transaction shared with concurrent callers.

        Items submitted while a batch is being written wait and go together in the next
        one: one transaction, one COMMIT (one fsync) for many writes. The result comes
        back only after the COMMIT, so an acknowledged write is durable. A caller that
        is cancelled does not cancel the batch.

        Raises:
            Unavailable: the database cannot be used right now.
            Exception: what ``writer`` gave for this item.
        """
        batcher = self._batchers.get(writer)
        if batcher is None:
            batcher = self._batchers[writer] = _GroupCommit(self, writer)
        result: Result = await batcher.submit(item)
        return result

    async def schema_revision(self) -> str | None:
        """The Alembic revision of the database (None before the first migration).

        Raises whatever the driver raises when the database cannot be reached.
        """
        async with self.engine.connect() as connection:
            migrated = await connection.run_sync(
                lambda sync: inspect(sync).has_table("alembic_version")
            )
            if not migrated:
                return None
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return None if revision is None else str(revision)

    async def dispose(self) -> None:
        """Wait for service calls still running, then close every pooled connection."""
        loop = asyncio.get_running_loop()
        pending = [task for task in _in_flight if task.get_loop() is loop]
        if pending:
            await asyncio.wait(pending, timeout=10)
        for threads in (self._threads, self._readers):
            if threads is not None:
                await loop.run_in_executor(None, threads.shutdown)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()


def _marking(work: Callable[[Connection], T], claim: ClaimRef) -> Callable[[Connection], T]:
    """``work``, then marking ``claim`` committed in the same transaction."""

    def marked(connection: Connection) -> T:
        result = work(connection)
        _mark_committed(connection, [claim])
        return result

    return marked


def _observe_pool(engine: Engine, name: str, size: int, max_overflow: int) -> None:
    """Follow the connections in use in ``engine``'s pool in the metrics."""
    metrics.DB_POOL_SIZE.labels(pool=name).set(size)
    metrics.DB_POOL_MAX.labels(pool=name).set(size + max_overflow)
    checked_out = metrics.DB_POOL_CHECKED_OUT.labels(pool=name)
    # Listened on the engine: the events follow it to the new pool that dispose() makes.
    event.listen(engine, "checkout", lambda *_args: checked_out.inc())
    event.listen(engine, "checkin", lambda *_args: checked_out.dec())


def _ensure_sqlite_directory(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


_Pending = tuple[Item, "asyncio.Future[Result]", ClaimRef | None]


class _GroupCommit(Generic[Item, Result]):
    """A queue of writes drained one transaction at a time.

    One batch in flight: while it waits for its COMMIT the next one fills up. (Two in
    flight on PostgreSQL measured no faster: smaller batches, more statements.)
    """

    def __init__(self, db: Database, writer: BatchWriter[Item, Result]) -> None:
        self.db = db
        self.writer = writer
        # Each item with its future and the idempotency claim of the request it is for.
        self.pending: list[_Pending[Item, Result]] = []
        self.draining = False

    def submit(self, item: Item) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self.pending.append((item, future, idempotency_claim.get()))
        if not self.draining:
            self.draining = True
            task = asyncio.ensure_future(self._drain())
            _in_flight.add(task)
            task.add_done_callback(_settled)
        return future

    async def _drain(self) -> None:
        # The task began in its first submitter's context: its claims go item by item.
        idempotency_claim.set(None)
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                await self._write(batch)
        finally:
            self.draining = False

    async def _write(self, batch: list[_Pending[Item, Result]]) -> None:
        items = [item for item, _, _ in batch]

        def write(connection: Connection) -> list[Result | Exception]:
            results = self.writer(connection, items)
            # A claim that is not the request's own fails the whole batch; each item is
            # then written alone, and only that one fails.
            _mark_committed(
                connection,
                [
                    claim
                    for (_, _, claim), result in zip(batch, results, strict=True)
                    if claim is not None and not isinstance(result, Exception)
                ],
            )
            return results

        try:
            results = await self.db.run(write, write=True)
        except Exception as error:
            if len(batch) > 1 and not isinstance(error, Unavailable):
                # Something in the batch broke the transaction: write each item alone,
                # so one bad item fails only its own caller.
                for single in batch:
                    await self._write([single])
                return
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the caller has gone
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A caller that went away never looks at its result; mark a failure as seen so
    # asyncio does not report it as "never retrieved".
    if not future.cancelled():
        future.exception()
