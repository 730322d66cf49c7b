"""Liveness never touches the database; readiness does, and says 503 when it is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from chat_service.app import create_app
from tests.factories import problem_of
from tests.support import load_test_settings, postgres_admin_url, scratch_database, sqlite_url


async def test_readiness_is_200_when_the_database_answers(client: TestClientProtocol) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["event_bus"]["status"] == "ok"
    assert "rate_limits" not in body["checks"]  # off in the tests


@pytest.fixture
async def app_without_database(database_url: str, tmp_path: Path) -> AsyncIterator[Quart]:
    """The service configured with a database of the same kind that cannot be reached."""
    if database_url.startswith("sqlite"):
        unreachable = f"sqlite+aiosqlite:///{tmp_path}"  # a directory: cannot be opened
    else:
        unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    settings = load_test_settings(
        database={"url": unreachable, "pool_timeout_seconds": 1.0},
    )
    app = create_app(settings)
    async with app.test_app():
        yield app


async def test_readiness_is_503_when_the_database_is_down(app_without_database: Quart) -> None:
    client = app_without_database.test_client()

    live = await client.get("/health")
    ready = await client.get("/health/ready")

    assert live.status_code == 200
    body = await problem_of(ready, 503)
    assert body["type"] == "urn:chat-service:problem:unavailable"
    assert body["checks"]["database"]["status"] == "unavailable"
    assert ready.headers["Retry-After"].isdigit()


async def test_requests_answer_503_when_the_database_is_down(app_without_database: Quart) -> None:
    client = app_without_database.test_client()

    created = await client.post("/sessions")
    read = await client.get("/sessions/01a207aa-9bd4-7454-b565-fba10f85994e")

    for response in (created, read):
        body = await problem_of(response, 503)
        assert body["type"] == "urn:chat-service:problem:unavailable"
        assert response.headers["Retry-After"].isdigit()


@pytest.fixture
def unmigrated_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind that was never migrated (sync: no loop yet)."""
    if database_url.startswith("sqlite"):
        yield sqlite_url(tmp_path / "empty.sqlite3")
        return
    with scratch_database(postgres_admin_url()) as url:
        yield url


@pytest.fixture
async def app_on_unmigrated_database(unmigrated_url: str) -> AsyncIterator[Quart]:
    app = create_app(load_test_settings(database={"url": unmigrated_url}))
    async with app.test_app():
        yield app


async def test_readiness_is_503_before_the_schema_is_migrated(
    app_on_unmigrated_database: Quart,
) -> None:
    response = await app_on_unmigrated_database.test_client().get("/health/ready")

    body = await problem_of(response, 503)
    assert "chat-service migrate" in body["detail"]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limits": {
                "enabled": True,
                "storage": "redis",
                "redis_url": "redis://127.0.0.1:1/0",
            }
        }
    ],
)
async def test_readiness_reports_a_rate_limit_redis_that_is_down_as_degraded(
    client: TestClientProtocol,
) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200  # the service still serves: uncounted
    body = await response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["rate_limits"]["status"] == "unavailable"
    assert body["checks"]["rate_limits"]["kind"] == "redis"
    assert body["checks"]["database"]["status"] == "ok"


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limits": {
                "enabled": True,
                "storage": "redis",
                "redis_url": "redis://127.0.0.1:6379/0",
            }
        }
    ],
)
async def test_readiness_reports_each_dependency(client: TestClientProtocol) -> None:
    body = await (await client.get("/health/ready")).get_json()

    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "event_bus": "ok",
        "rate_limits": "ok",
    }


@pytest.mark.parametrize(
    "settings_overrides",
    [{"live": {"bus": "redis", "redis_url": "redis://127.0.0.1:1/0", "reconnect_max_seconds": 60}}],
)
async def test_readiness_reports_an_event_bus_that_cannot_connect_as_degraded(
    client: TestClientProtocol,
) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["event_bus"] == {
        "status": "disconnected",
        "kind": "redis",
        "detail": "reconnecting: live events from other processes wait for the resync",
    }
