"""/metrics on the real server process: several workers add up, and its own listener.

Each test starts ``chat-service serve`` as operators do, configured through
``CHAT_SERVICE_*`` variables, and scrapes it over TCP on 127.0.0.1.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from chat_service.metrics import MULTIPROCESS_DIR_VARIABLE
from tests.metrics_support import MESSAGES_ROUTE, Scrape, requests
from tests.server_process import Server, child_pids, free_port, service_env, serving

pytestmark = pytest.mark.slow

CLOSE = {"Connection": "close"}  # a new connection each time: either worker may answer


def wait_for_workers(server: Server, count: int) -> None:
    deadline = time.monotonic() + 20
    while server.logs().count("Running on http") < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.logs().count("Running on http") == count, server.logs()


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode().partition("=") for entry in raw if entry)
    return {name: value for name, _, value in pairs}


def test_every_worker_is_counted_whichever_answers_the_scrape(
    database_url: str, tmp_path: Path
) -> None:
    posts = 20
    port = free_port()
    env = service_env(
        DATABASE_URL=database_url,
        HTTP_BIND=f"127.0.0.1:{port}",
        HTTP_WORKERS="2",
        DATABASE_POOL_SIZE="4",
    )
    with serving(env, tmp_path / "server.log", port=port) as server:
        wait_for_workers(server, 2)
        workers = child_pids(server.pid)
        directories = {environment_of(pid).get(MULTIPROCESS_DIR_VARIABLE) for pid in workers}
        with server.client() as client:
            for _ in range(posts):
                created = client.post("/sessions", headers=CLOSE)
                assert created.status_code == 201
                message = {"content": "hello", "author_type": "customer"}
                path = f"/sessions/{created.json()['id']}/messages"
                assert client.post(path, json=message, headers=CLOSE).status_code == 201
            scrapes = [client.get("/metrics", headers=CLOSE) for _ in range(8)]
        assert server.stop() == 0

    (directory,) = directories
    assert directory is not None
    assert Path(directory).name.startswith("chat-service-metrics-")
    assert not Path(directory).exists(), "the supervisor removes the metrics directory"
    for response in scrapes:
        assert response.status_code == 200
        scraped = Scrape.parse(response.text)
        assert requests(scraped, "/sessions", "POST", 201) == posts
        assert requests(scraped, MESSAGES_ROUTE, "POST", 201) == posts
        assert scraped.value("chat_service_messages_created_total") == posts
        # Each worker's pool, added up: the answering worker alone would say 4.
        assert scraped.value("chat_service_db_pool_size", pool="async") == 2 * 4


def test_metrics_bind_serves_metrics_alone_and_hides_them_from_the_public_address(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    metrics_port = free_port()
    while metrics_port == port:
        metrics_port = free_port()
    env = service_env(
        DATABASE_URL=database_url,
        HTTP_BIND=f"127.0.0.1:{port}",
        METRICS_BIND=f"127.0.0.1:{metrics_port}",
    )
    with (
        serving(env, tmp_path / "server.log", port=port) as server,
        server.client() as public,
        httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=5) as private,
    ):
        assert public.get("/health").status_code == 200
        hidden = public.get("/metrics")
        scraped = private.get("/metrics")
        others = [private.get("/health"), private.post("/sessions"), private.get("/docs")]

    assert hidden.status_code == 404
    assert hidden.headers["content-type"] == "application/problem+json"
    assert scraped.status_code == 200
    assert requests(Scrape.parse(scraped.text), "/health", "GET", 200) >= 1
    assert [response.status_code for response in others] == [404, 404, 404]
