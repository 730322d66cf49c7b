"""Rate limits held in Redis hold across processes: two real servers, one count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.server_process import Server, free_port, service_env, serving
from tests.support import alembic_upgrade, sqlite_url

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 10


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two processes on one SQLite file, counting messages in one Redis."""
    workdir = tmp_path_factory.mktemp("limits")
    url = sqlite_url(workdir / "chat.sqlite3")
    alembic_upgrade(url)
    with contextlib.ExitStack() as stack:
        started = []
        for name in ("a", "b"):
            port = free_port()
            env = service_env(
                DATABASE_URL=url,
                HTTP_BIND=f"127.0.0.1:{port}",
                RATE_LIMITS_ENABLED="true",
                RATE_LIMITS_STORAGE="redis",
                RATE_LIMITS_REDIS_URL=REDIS_URL,
                RATE_LIMITS_STRATEGY="fixed-window",
                RATE_LIMITS_MESSAGES=f"{LIMIT}/minute",
            )
            log = workdir / f"server-{name}.log"
            started.append(stack.enter_context(serving(env, log, port=port, wait=False)))
        for server in started:
            server.wait_until_healthy(60)
        yield started


def test_two_processes_on_one_redis_allow_the_limit_in_total(servers: list[Server]) -> None:
    a, b = servers
    with a.client() as client:
        session = client.post("/sessions").json()
    headers = {"Authorization": f"Bearer {session['customer_token']}"}
    statuses = []
    with a.client() as on_a, b.client() as on_b:
        for index in range(3 * LIMIT):
            response = (on_a if index % 2 == 0 else on_b).post(
                f"/sessions/{session['id']}/messages",
                json={"content": f"message {index}"},
                headers=headers,
            )
            statuses.append(response.status_code)
        stored = on_b.get(f"/sessions/{session['id']}/messages?limit=200", headers=headers)

    # Each process counting alone would have allowed twice the limit.
    assert statuses.count(201) == LIMIT, statuses
    assert set(statuses) == {201, 429}
    assert len(stored.json()["items"]) == 1 + LIMIT  # the greeting and the allowed ones
