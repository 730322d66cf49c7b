"""The engine, the session factory and the unit of work."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import event, exc, inspect, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from chat_service.errors import Unavailable

log = logging.getLogger(__name__)

# Failures that mean "the database cannot be used right now" rather than a bug: the
# server is down or restarting, the connection broke, the pool is exhausted, or
# SQLite's write lock was not free within busy_timeout.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError)

P = ParamSpec("P")
T = TypeVar("T")

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
        # log line or an error message.
        options: dict[str, Any] = {"pool_pre_ping": True, "echo": echo, "hide_parameters": True}
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
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = async_sessionmaker(writer_engine, expire_on_commit=False)
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
        pending = [task for task in _in_flight if task.get_loop() is asyncio.get_running_loop()]
        if pending:
            await asyncio.wait(pending, timeout=10)
        await self.engine.dispose()


def _ensure_sqlite_directory(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
