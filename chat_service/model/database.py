"""The engine, the session factory and the unit of work."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from sqlalchemy import event, exc, inspect, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from chat_service.errors import Unavailable

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
BatchWriter = Callable[[AsyncConnection, Sequence[Item]], Awaitable[list[Result | Exception]]]
# Items per transaction at most: a bound on how long one batch holds its locks.
MAX_BATCH = 128

# Tasks started by ``cancel_safe`` that are still running: held so they are not
# garbage-collected, and awaited by ``Database.dispose`` before the pool closes.
_in_flight: set[asyncio.Task[Any]] = set()


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
        cursor.close()

    return on_connect


def _sqlite_begin(connection: Connection) -> None:
    # A writer takes the write lock up front (BEGIN IMMEDIATE) so that it waits on
    # busy_timeout instead of failing with "database is locked" when it upgrades a
    # read transaction; readers use a plain deferred BEGIN and never block writers.
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """An async engine and the units of work built on it."""

    def __init__(
        self,
        url: str | URL,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
        sqlite_busy_timeout_ms: int = 10_000,
        echo: bool = False,
    ) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # hide_parameters: statement parameters hold chat text, which must never reach a
        # log line or an error message. No pool_pre_ping: a ping per checkout costs a
        # round trip on every request. A broken connection is found when it is used; the
        # error invalidates the whole pool (that request answers 503), and the next
        # checkout connects afresh.
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.dialect == "sqlite":
            _ensure_sqlite_directory(parsed)
        options.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
        self.engine = create_async_engine(parsed, **options)
        writer_engine = self.engine
        if self.dialect == "sqlite":
            sync_engine = self.engine.sync_engine
            event.listen(sync_engine, "connect", _sqlite_on_connect(sqlite_busy_timeout_ms))
            event.listen(sync_engine, "begin", _sqlite_begin)
            writer_engine = self.engine.execution_options(sqlite_immediate=True)
        self._writer_engine: AsyncEngine = writer_engine
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = async_sessionmaker(writer_engine, expire_on_commit=False)
        self._batchers: dict[Callable[..., Any], _GroupCommit[Any, Any]] = {}
        # SQLite has one writer at a time. Queueing this process's writers here hands the
        # lock over at once, where SQLite's busy handler would poll with growing sleeps;
        # other processes are still kept out by the database lock and busy_timeout.
        self._write_turn = asyncio.Lock() if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def unit_of_work(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One transaction: COMMIT on a clean exit, ROLLBACK on any exception.

        Raises:
            Unavailable: the database cannot be reached or used right now.
        """
        try:
            async with self._transaction(write=write) as session:
                yield session
        except _UNAVAILABLE as error:
            log.warning("database unavailable: %s", type(error).__name__)
            raise Unavailable("the database is not available; try again shortly") from None

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        if not write:
            async with self._reader.begin() as session:
                yield session
        elif self._write_turn is None:
            async with self._writer.begin() as session:
                yield session
        else:
            async with self._write_turn, self._writer.begin() as session:
                yield session

    @asynccontextmanager
    async def connection(self, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
        """One transaction on a Core connection (no ORM): for the hot paths.

        COMMIT on a clean exit, ROLLBACK on any exception, as ``unit_of_work``.

        Raises:
            Unavailable: the database cannot be reached or used right now.
        """
        try:
            if not write:
                async with self.engine.begin() as connection:
                    yield connection
            elif self._write_turn is None:
                async with self._writer_engine.begin() as connection:
                    yield connection
            else:
                async with self._write_turn, self._writer_engine.begin() as connection:
                    yield connection
        except _UNAVAILABLE as error:
            log.warning("database unavailable: %s", type(error).__name__)
            raise Unavailable("the database is not available; try again shortly") from None

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
        await self.engine.dispose()


def _ensure_sqlite_directory(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


class _GroupCommit(Generic[Item, Result]):
    """A queue of writes drained one transaction at a time."""

    def __init__(self, db: Database, writer: BatchWriter[Item, Result]) -> None:
        self.db = db
        self.writer = writer
        self.pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self.draining = False

    def submit(self, item: Item) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self.pending.append((item, future))
        if not self.draining:
            self.draining = True
            task = asyncio.ensure_future(self._drain())
            _in_flight.add(task)
            task.add_done_callback(_settled)
        return future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                await self._write(batch)
        finally:
            self.draining = False

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        try:
            async with self.db.connection(write=True) as connection:
                results = await self.writer(connection, items)
        except Exception as error:
            if len(batch) > 1 and not isinstance(error, Unavailable):
                # Something in the batch broke the transaction: write each item alone,
                # so one bad item fails only its own caller.
                for single in batch:
                    await self._write([single])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
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
