"""The real service process, run as operators and the Docker image run it.

Each test starts ``python -m chat_service ...`` from the repository root, configured only
through ``CHAT_SERVICE_*`` environment variables, and talks to it over TCP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_service.server import _with_shared_cursor_secret
from tests.conftest import BACKENDS
from tests.server_process import (
    Server,
    child_pids,
    free_port,
    is_running,
    port_refuses,
    read_response,
    run_cli,
    service_env,
    serving,
)
from tests.support import (
    alembic_upgrade,
    load_test_settings,
    postgres_admin_url,
    scratch_database,
    sqlite_url,
)

pytestmark = pytest.mark.slow

# Rounds of resets in the disconnect test: enough that the original service wedged every run.
ROUNDS = 8
GREETING = "Hello, how may I help you?"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema; PostgreSQL being unreachable fails the test."""
    if backend == "sqlite":
        # A directory that does not exist yet, like data/ in a fresh checkout.
        yield sqlite_url(tmp_path / "data" / "chat.sqlite3")
        return
    with scratch_database(postgres_admin_url()) as url:
        yield url


@pytest.fixture
def migrated_database(empty_database: str) -> str:
    alembic_upgrade(empty_database)
    return empty_database


def start(database_url: str, tmp_path: Path, **settings: str) -> AbstractContextManager[Server]:
    """Serve ``database_url`` on a free port, with extra ``CHAT_SERVICE_*`` settings."""
    port = free_port()
    env = service_env(DATABASE_URL=database_url, HTTP_BIND=f"127.0.0.1:{port}", **settings)
    return serving(env, tmp_path / "server.log", port=port)


@pytest.fixture
def server(migrated_database: str, tmp_path: Path) -> Iterator[Server]:
    with start(migrated_database, tmp_path) as running:
        yield running


def open_session(server: Server) -> str:
    with server.client() as client:
        response = client.post("/sessions")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def message_request(port: int, session_id: str, body: bytes, length: int | None = None) -> bytes:
    head = (
        f"POST /sessions/{session_id}/messages HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def new_message(content: str) -> dict[str, Any]:
    return {"content": content, "author_type": "customer"}


def test_migrate_then_serve_then_stop_on_sigterm(empty_database: str, tmp_path: Path) -> None:
    migrated = run_cli("migrate", env=service_env(DATABASE_URL=empty_database))
    assert migrated.returncode == 0, migrated.stderr
    database_kind = "sqlite" if empty_database.startswith("sqlite") else "postgresql"
    bus_kind = "memory" if database_kind == "sqlite" else "postgres"

    with start(empty_database, tmp_path) as server:
        with server.client() as client:
            created = client.post("/sessions")
            assert created.status_code == 201, created.text
            session_id = created.json()["id"]
            posted = client.post(
                f"/sessions/{session_id}/messages", json=new_message("Where is my parcel?")
            )
            assert posted.status_code == 201, posted.text
            fetched = client.get(f"/sessions/{session_id}")
            ready = client.get("/health/ready")

        assert fetched.status_code == 200
        assert [(m["seq"], m["author_type"], m["content"]) for m in fetched.json()["messages"]] == [
            (1, "service_agent", GREETING),
            (2, "customer", "Where is my parcel?"),
        ]
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "checks": {
                "database": {"status": "ok", "kind": database_kind},
                "event_bus": {"status": "ok", "kind": bus_kind},
            },
        }
        assert server.stop(timeout=5) == 0


def test_oversized_body_is_refused_before_it_is_sent(server: Server) -> None:
    session_id = open_session(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(message_request(server.port, session_id, b"", length=10_000_000))
        response = read_response(connection, timeout=2)

    assert response.status == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.body)["status"] == 413


def trickle(port: int, data: bytes, gap_seconds: float, limit_seconds: float) -> float:
    """Send ``data`` a byte every ``gap_seconds``; how long until the server cut it off.

    Fails if the server is still reading after ``limit_seconds``.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            for byte in data:
                connection.sendall(bytes([byte]))
                time.sleep(gap_seconds)
                if time.monotonic() - started > limit_seconds:
                    raise AssertionError(f"still reading after {limit_seconds} s")
            connection.settimeout(limit_seconds)
            while connection.recv(65536):
                pass  # an answer (408), then the close
        except (BrokenPipeError, ConnectionResetError):
            pass
    return time.monotonic() - started


@pytest.fixture
def impatient_server(migrated_database: str, tmp_path: Path) -> Iterator[Server]:
    """Idle connections closed after 1 s, bodies given 1 s to arrive."""
    with start(
        migrated_database,
        tmp_path,
        HTTP_KEEP_ALIVE_SECONDS="1",
        HTTP_BODY_TIMEOUT_SECONDS="1",
    ) as running:
        yield running


def test_headers_trickling_in_are_cut_off(impatient_server: Server) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"

    took = trickle(impatient_server.port, request, gap_seconds=0.1, limit_seconds=8)

    assert took < 4


def test_a_body_that_does_not_arrive_in_time_is_answered_408(impatient_server: Server) -> None:
    session_id = open_session(impatient_server)
    body = json.dumps(new_message("slow " * 40)).encode()
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=5) as connection:
        connection.sendall(message_request(impatient_server.port, session_id, b"", len(body)))
        started = time.monotonic()
        for byte in body[:8]:  # a trickle, then nothing: the body never completes
            connection.sendall(bytes([byte]))
            time.sleep(0.1)
        response = read_response(connection, timeout=5)

    assert response.status == 408
    assert response.headers["content-type"] == "application/problem+json"
    assert time.monotonic() - started < 4


def test_idle_connections_do_not_starve_the_others(impatient_server: Server) -> None:
    idle = [
        socket.create_connection(("127.0.0.1", impatient_server.port), timeout=5)
        for _ in range(300)
    ]
    try:
        with impatient_server.client(timeout=5) as client:
            created = client.post("/sessions")
    finally:
        for connection in idle:
            connection.close()

    assert created.status_code == 201


def test_no_content_answers_carry_no_body_headers(server: Server) -> None:
    """204 has no body (RFC 9110): neither Content-Type nor Content-Length, on the wire."""
    session_id = open_session(server)
    with server.client() as client:
        response = client.post(f"/sessions/{session_id}/read", json={"seq": 1})

    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers
    assert "content-length" not in response.headers


def hang_up(connection: socket.socket) -> None:
    connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def abort(connection: socket.socket) -> None:
    """Close with a reset (RST), which makes the server cancel the request at once."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def wait_until_quiet(client: httpx.Client, session_id: str) -> None:
    """Wait until requests still in flight have stored what they will (bounded)."""
    counts: list[int] = []
    deadline = time.monotonic() + 10
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        assert time.monotonic() < deadline, f"messages kept arriving: {counts}"
        page = client.get(f"/sessions/{session_id}/messages", params={"limit": 200})
        counts.append(len(page.json()["items"]))
        time.sleep(0.1)


def test_clients_that_disconnect_never_wedge_the_database(server: Server) -> None:
    session_id = open_session(server)
    body = json.dumps(new_message("sent, then gone")).encode()
    complete = message_request(server.port, session_id, body)
    half = message_request(server.port, session_id, body[: len(body) // 2], length=len(body))
    address = ("127.0.0.1", server.port)
    connections = [socket.create_connection(address, timeout=5) for _ in range(25)]
    for index, connection in enumerate(connections):
        connection.sendall(complete if index < 20 else half)
    for connection in connections:
        hang_up(connection)
    # Resets spread over the time the server works on the requests, so that some land
    # in the middle of a transaction (the original service then kept the connection,
    # and SQLite's write lock, to itself), each round followed by a client that stays.
    took = []
    with server.client(timeout=2) as client:
        for round_ in range(ROUNDS):
            connections = [socket.create_connection(address, timeout=5) for _ in range(20)]
            for connection in connections:
                connection.sendall(complete)
            for connection in connections:
                time.sleep(0.005)
                abort(connection)
            started = time.monotonic()
            posted = client.post(
                f"/sessions/{session_id}/messages", json=new_message(f"stay {round_}")
            )
            took.append(time.monotonic() - started)
            assert posted.status_code == 201, posted.text
        wait_until_quiet(client, session_id)
        page = client.get(f"/sessions/{session_id}/messages", params={"limit": 200})

    assert max(took) < 2, took
    assert page.status_code == 200
    items = page.json()["items"]
    assert [m["seq"] for m in items] == list(range(1, len(items) + 1))
    stayed = [m["content"] for m in items if m["content"].startswith("stay")]
    assert stayed == [f"stay {n}" for n in range(ROUNDS)]


def test_two_workers_serve_and_stop_together(migrated_database: str, tmp_path: Path) -> None:
    with start(migrated_database, tmp_path, HTTP_WORKERS="2") as server:
        deadline = time.monotonic() + 20
        while server.logs().count("Running on http") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.logs().count("Running on http") == 2, server.logs()
        with server.client() as client:
            for _ in range(6):
                created = client.post("/sessions", headers={"Connection": "close"})
                assert created.status_code == 201
                session_id = created.json()["id"]
                posted = client.post(
                    f"/sessions/{session_id}/messages",
                    json=new_message("hello"),
                    headers={"Connection": "close"},
                )
                assert posted.status_code == 201
                assert [m["seq"] for m in posted.json()["messages"]] == [1, 2]
            # Cursors work whichever worker answers (no secret is configured here).
            for _ in range(10):
                seqs, cursor = [], None
                for _ in range(2):
                    query = "?limit=1" + (f"&after={cursor}" if cursor else "")
                    page = client.get(
                        f"/sessions/{session_id}/messages{query}", headers={"Connection": "close"}
                    )
                    assert page.status_code == 200, page.text
                    seqs += [m["seq"] for m in page.json()["items"]]
                    cursor = page.json()["next_cursor"]
                assert seqs == [1, 2]
                assert cursor is None
        children = child_pids(server.pid)
        assert len(children) >= 2

        assert server.stop() == 0
        deadline = time.monotonic() + 5
        while any(is_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if is_running(pid)]
        assert port_refuses(server.port)


def test_workers_stop_when_their_supervisor_is_killed(
    migrated_database: str, tmp_path: Path
) -> None:
    """SIGKILL reaches the supervisor alone: its workers must not serve on as orphans."""
    with start(migrated_database, tmp_path, HTTP_WORKERS="2") as server:
        deadline = time.monotonic() + 20
        while server.logs().count("Running on http") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = child_pids(server.pid)
        assert len(children) >= 2, server.logs()

        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        deadline = time.monotonic() + 15
        while any(is_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert not [pid for pid in children if is_running(pid)], server.logs()
        assert port_refuses(server.port)
        assert "the supervisor process is gone: stopping" in server.logs()


def test_show_config_masks_secrets_and_applies_the_environment() -> None:
    env = service_env(
        DATABASE_URL="postgresql+asyncpg://user:supersecretpw@127.0.0.1/x",
        SECURITY_CURSOR_SECRET="anothersecret",
        HTTP_WORKERS="3",
        HTTP_BIND="127.0.0.1:9999",
    )
    result = run_cli("show-config", env=env, timeout=30)

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["database"]["url"] == "***"
    assert shown["security"]["cursor_secret"] == "***"
    assert shown["http"]["workers"] == 3
    assert shown["http"]["bind"] == "127.0.0.1:9999"
    assert shown["limits"]["message_chars"] == 10_000  # from config/config.toml
    for secret in ("supersecretpw", "anothersecret"):
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_workers_share_one_cursor_key_when_none_is_configured() -> None:
    shared = _with_shared_cursor_secret(load_test_settings())
    configured = load_test_settings(security={"cursor_secret": "set-by-the-operator"})

    # The supervisor draws the key once; every worker gets it in its pickled settings.
    assert len(shared.security.cursor_secret.get_secret_value()) >= 32
    assert _with_shared_cursor_secret(configured) is configured
