"""Faults under load, on the real server process: nothing acknowledged is ever lost.

Posters post messages with unique contents as fast as they can while the server is
killed with SIGKILL, stopped with SIGTERM, or has its PostgreSQL connections
terminated. Every message that got a 201 must then be in the database exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.server_process import Server, free_port, service_env, serving
from tests.support import alembic_upgrade, postgres_admin_url, scratch_database

pytestmark = pytest.mark.slow

POSTERS = 6


@dataclass
class Load:
    """What the posters saw: the contents acknowledged, every status, when each 201 came."""

    acknowledged: list[str] = field(default_factory=list)
    statuses: collections.Counter[int | str] = field(default_factory=collections.Counter)
    created_at: list[float] = field(default_factory=list)


async def post_until(base_url: str, session_id: str, stop: asyncio.Event, load: Load) -> None:
    """One poster: a message at a time, each with a content of its own, until ``stop``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            content = f"load {uuid.uuid4()}"
            try:
                response = await client.post(
                    f"/sessions/{session_id}/messages",
                    json={"content": content, "author_type": "customer"},
                    headers={"Prefer": "return=minimal"},
                )
            except httpx.TransportError as error:
                load.statuses[type(error).__name__] += 1
                await asyncio.sleep(0.05)  # the server is down: do not spin
                continue
            load.statuses[response.status_code] += 1
            if response.status_code == 201:
                load.acknowledged.append(content)
                load.created_at.append(time.monotonic())


@contextlib.asynccontextmanager
async def posting(base_url: str, session_id: str, load: Load) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [
        asyncio.ensure_future(post_until(base_url, session_id, stop, load)) for _ in range(POSTERS)
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def stored_contents(server: Server, session_id: str) -> collections.Counter[str]:
    """Every message content of the session, read back through the API."""
    contents: collections.Counter[str] = collections.Counter()
    cursor = None
    with server.client(timeout=30) as client:
        while True:
            query = "limit=200" + (f"&after={cursor}" if cursor else "")
            page = client.get(f"/sessions/{session_id}/messages?{query}").json()
            contents.update(message["content"] for message in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return contents


def assert_each_acknowledged_once(load: Load, stored: collections.Counter[str]) -> None:
    assert load.acknowledged, load.statuses
    missing = [content for content in load.acknowledged if stored[content] == 0]
    repeated = [content for content in load.acknowledged if stored[content] > 1]
    assert (missing, repeated) == ([], []), load.statuses


def server_env(database_url: str, port: int, **settings: str) -> dict[str, str]:
    return service_env(DATABASE_URL=database_url, HTTP_BIND=f"127.0.0.1:{port}", **settings)


def open_session(server: Server) -> str:
    with server.client() as client:
        response = client.post("/sessions")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_kill_9_under_load_loses_no_acknowledged_message(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(database_url, port)
    load = Load()
    session_id = ""
    for round_ in range(3):
        with serving(env, tmp_path / f"server-{round_}.log", port=port) as server:
            session_id = session_id or open_session(server)
            async with posting(server.base_url, session_id, load):
                await asyncio.sleep(1.0)
                os.killpg(server.pid, signal.SIGKILL)  # the server and its worker, at once
                server.process.wait(timeout=10)
                await asyncio.sleep(0.3)  # posts against a dead server

    with serving(env, tmp_path / "server-after.log", port=port) as server:
        stored = stored_contents(server, session_id)
    assert_each_acknowledged_once(load, stored)
    allowed = {201, "ConnectError", "ReadError", "WriteError", "RemoteProtocolError"}
    assert set(load.statuses) <= allowed, load.statuses


@dataclass
class Retries:
    """Posts sent with an Idempotency-Key and retried until they have an answer."""

    done: list[str] = field(default_factory=list)  # 201, or 409: carried out, answer lost
    unanswered: list[tuple[str, str]] = field(default_factory=list)  # (content, key)
    statuses: collections.Counter[int | str] = field(default_factory=collections.Counter)


async def post_keyed(client: httpx.AsyncClient, session_id: str, content: str, key: str) -> bool:
    """One attempt; True when the post has its final answer."""
    response = await client.post(
        f"/sessions/{session_id}/messages",
        json={"content": content, "author_type": "customer"},
        headers={"Prefer": "return=minimal", "Idempotency-Key": key},
    )
    if response.status_code == 201:
        return True
    if response.status_code == 409:
        # Carried out, but the server died before keeping the answer: the message is
        # stored, and retrying must not store it again. In use: try again.
        return bool(response.json()["type"].endswith("idempotency-answer-lost"))
    return False


async def retry_until(
    base_url: str, session_id: str, stop: asyncio.Event, retries: Retries
) -> None:
    """One poster that retries each post with its key until it is answered."""
    pending: tuple[str, str] | None = None
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            content, key = pending = pending or (f"keyed {uuid.uuid4()}", str(uuid.uuid4()))
            try:
                answered = await post_keyed(client, session_id, content, key)
            except httpx.TransportError as error:
                retries.statuses[type(error).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            if answered:
                retries.done.append(content)
                pending = None
            else:
                await asyncio.sleep(0.05)
    if pending is not None:
        retries.unanswered.append(pending)


async def test_posts_retried_with_their_key_across_kill_9_are_stored_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(database_url, port, IDEMPOTENCY_LEASE_SECONDS="1")
    retries = Retries()
    session_id = ""
    for round_ in range(3):
        with serving(env, tmp_path / f"server-{round_}.log", port=port) as server:
            session_id = session_id or open_session(server)
            stop = asyncio.Event()
            posters = [
                asyncio.ensure_future(retry_until(server.base_url, session_id, stop, retries))
                for _ in range(POSTERS)
            ]
            await asyncio.sleep(1.0)
            os.killpg(server.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*posters)

    with serving(env, tmp_path / "server-after.log", port=port) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for content, key in retries.unanswered:
                deadline = time.monotonic() + 10
                while not await post_keyed(client, session_id, content, key):
                    assert time.monotonic() < deadline, f"{content} never got an answer"
                    await asyncio.sleep(0.2)
                retries.done.append(content)
        stored = stored_contents(server, session_id)

    sent = retries.done
    assert len(sent) > len(retries.unanswered) > 0, retries.statuses
    assert [content for content in sent if stored[content] != 1] == []
    assert sum(count for content, count in stored.items() if content.startswith("keyed")) == len(
        sent
    )


async def test_sigterm_under_load_finishes_what_it_accepted_and_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(database_url, port)
    load = Load()
    with serving(env, tmp_path / "server.log", port=port) as server:
        session_id = open_session(server)
        async with posting(server.base_url, session_id, load):
            await asyncio.sleep(1.0)
            server.process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(server.process.wait, 15)
            await asyncio.sleep(0.3)

    with serving(env, tmp_path / "server-after.log", port=port) as server:
        stored = stored_contents(server, session_id)
    assert exit_code == 0, server.logs()[-3000:]
    assert_each_acknowledged_once(load, stored)
    # Refused once it stopped listening, or a keep-alive connection closed under a new
    # request; never an error answer.
    allowed = {201, "ConnectError", "ReadError", "WriteError", "RemoteProtocolError"}
    assert set(load.statuses) <= allowed, load.statuses


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with scratch_database(postgres_admin_url()) as url:
        alembic_upgrade(url)
        yield url


async def test_postgres_connections_terminated_under_load_answer_503_and_recover(
    postgres_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(postgres_database, port)
    load = Load()
    terminated_at = []
    dsn = postgres_database.replace("postgresql+asyncpg://", "postgresql://")
    with serving(env, tmp_path / "server.log", port=port) as server:
        session_id = open_session(server)
        async with posting(server.base_url, session_id, load):
            await asyncio.sleep(1.0)
            for _ in range(3):
                outside = await asyncpg.connect(dsn)
                try:
                    killed = await outside.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                finally:
                    await outside.close()
                assert killed >= 1
                terminated_at.append(time.monotonic())
                await asyncio.sleep(1.0)
        stored = stored_contents(server, session_id)
        ready = httpx.get(server.base_url + "/health/ready", timeout=5)

    assert_each_acknowledged_once(load, stored)
    assert set(load.statuses) <= {201, 503}, load.statuses  # never a 500
    for moment in terminated_at:
        recovered = [at for at in load.created_at if at > moment]
        assert recovered, "no message was acknowledged after the connections were terminated"
        assert recovered[0] - moment < 5.0
    assert ready.status_code == 200
