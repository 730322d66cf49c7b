"""GET /metrics: what is counted, how it is labelled, and who may read it.

The metrics live in the test process's registry, shared by every test: each test
compares a scrape after its requests with one before them.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from chat_service.routes.state import app_state
from tests.api.access_world import AUTH_REQUIRED
from tests.factories import create_session, post_message, problem_of, send_message
from tests.live_support import LiveServer, sse, ws
from tests.metrics_support import MESSAGES_ROUTE, Scrape, grown, requests_grown

METRICS_TOKEN = "metrics-scrape-token-for-tests"
SESSION_ROUTE = "/sessions/<uuid:session_id>"


async def scrape(client: TestClientProtocol, **headers: str) -> Scrape:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    return Scrape.parse(await response.get_data(as_text=True))


async def test_requests_are_counted_by_route_template_method_and_status(
    client: TestClientProtocol,
) -> None:
    before = await scrape(client)
    session = await create_session(client)
    await post_message(client, session["id"])
    await post_message(client, session["id"])
    missing = uuid.uuid4()
    assert (await client.get(f"/sessions/{missing}")).status_code == 404
    after = await scrape(client)

    assert requests_grown(before, after, "/sessions", "POST", 201) == 1
    assert requests_grown(before, after, MESSAGES_ROUTE, "POST", 201) == 2
    assert requests_grown(before, after, SESSION_ROUTE, "GET", 404) == 1
    duration = "chat_service_http_request_duration_seconds_count"
    assert grown(before, after, duration, route=MESSAGES_ROUTE, method="POST") == 2
    # Ids never become label values: the series stay as many as the routes.
    assert session["id"] not in after.text
    assert str(missing) not in after.text


async def test_unmatched_paths_and_unknown_methods_share_fixed_labels(
    client: TestClientProtocol,
) -> None:
    before = await scrape(client)
    path = f"/no/such/thing/{uuid.uuid4()}"
    await problem_of(await client.get(path), 404)
    await problem_of(await client.open("/sessions", method="BREW"), 405)
    after = await scrape(client)

    assert requests_grown(before, after, "unmatched", "GET", 404) == 1
    assert requests_grown(before, after, "unmatched", "OTHER", 405) == 1
    assert path not in after.text
    assert "BREW" not in after.text


async def test_messages_created_counts_committed_messages_only(client: TestClientProtocol) -> None:
    session = await create_session(client)
    before = await scrape(client)
    await post_message(client, session["id"], "one")
    await post_message(client, session["id"], "two")
    await problem_of(await send_message(client, str(uuid.uuid4()), "nowhere"), 404)
    await problem_of(await send_message(client, session["id"], ""), 422)
    after = await scrape(client)

    assert grown(before, after, "chat_service_messages_created_total") == 2


async def test_idempotent_replays_are_counted_by_route(client: TestClientProtocol) -> None:
    before = await scrape(client)
    for route in ("/sessions", MESSAGES_ROUTE, "/agents", "/api-keys", "/live/tickets"):
        assert before.has("chat_service_idempotent_replays_total", route=route)
    session = await create_session(client)
    path = f"/sessions/{session['id']}/messages"
    body = {"content": "once", "author_type": "customer"}
    for _ in range(3):
        response = await client.post(path, json=body, headers={"Idempotency-Key": "k"})
        assert response.status_code == 201
    after = await scrape(client)

    replays = "chat_service_idempotent_replays_total"
    assert grown(before, after, replays, route=MESSAGES_ROUTE) == 2
    assert grown(before, after, replays, route="/sessions") == 0
    assert grown(before, after, "chat_service_messages_created_total") == 1


async def test_metrics_are_not_in_the_openapi_document(client: TestClientProtocol) -> None:
    spec = await (await client.get("/openapi.json")).get_json()

    assert "/metrics" not in spec["paths"]


async def test_connections_in_use_are_followed_per_pool(app: Quart) -> None:
    db = app_state(app).db
    client = app.test_client()
    settings = app_state(app).settings.database
    before = await scrape(client)
    assert before.value("chat_service_db_pool_size", pool="async") == settings.pool_size
    assert before.value("chat_service_db_pool_max_connections", pool="async") == (
        settings.pool_size + settings.max_overflow
    )

    async with db.engine.connect(), db.engine.connect():
        holding = await scrape(client)
    after = await scrape(client)

    in_use = "chat_service_db_pool_checked_out"
    assert grown(before, holding, in_use, pool="async") == 2
    assert grown(before, after, in_use, pool="async") == 0
    if db.dialect == "sqlite":
        assert after.value("chat_service_db_pool_size", pool="sync") == 3


@pytest.mark.parametrize(
    "settings_overrides",
    [{"rate_limits": {"enabled": True, "sessions": "1/minute", "reads": "1/minute"}}],
)
async def test_rate_limited_requests_are_counted_and_metrics_are_never_limited(
    client: TestClientProtocol,
) -> None:
    before = await scrape(client)
    assert (await client.post("/sessions")).status_code == 201
    await problem_of(await client.post("/sessions"), 429)
    for _ in range(3):  # far above the reads limit
        after = await scrape(client)

    limited = "chat_service_rate_limited_total"
    assert grown(before, after, limited, route_class="sessions") == 1
    assert after.has(limited, route_class="messages")
    assert requests_grown(before, after, "/sessions", "POST", 429) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [{**AUTH_REQUIRED, "metrics": {"token": METRICS_TOKEN}}],
    ids=["token"],
)
async def test_a_metrics_token_is_required_when_set(client: TestClientProtocol) -> None:
    missing = await problem_of(await client.get("/metrics"), 401)
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    await problem_of(wrong, 401)
    # No API credential is needed (auth.required is on): the metrics token alone.
    scraped = await scrape(client, Authorization=f"Bearer {METRICS_TOKEN}")

    assert "token" in missing["detail"]
    assert "chat_service_http_requests_total" in scraped.names()


@pytest.mark.parametrize("settings_overrides", [{"metrics": {"enabled": False}}], ids=["off"])
async def test_metrics_can_be_switched_off(client: TestClientProtocol) -> None:
    await problem_of(await client.get("/metrics"), 404)


async def live_gauges(server: LiveServer) -> tuple[float, float]:
    async with server.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    scraped = Scrape.parse(response.text)
    gauge = "chat_service_live_connections"
    return scraped.value(gauge, transport="sse"), scraped.value(gauge, transport="websocket")


async def until_gauges(server: LiveServer, expected: tuple[float, float]) -> None:
    """Wait (bounded) until the server has noticed that streams closed."""
    async with asyncio.timeout(10):
        while await live_gauges(server) != expected:
            await asyncio.sleep(0.05)


async def test_open_live_streams_are_counted_by_transport(server: LiveServer) -> None:
    async with server.client() as client:
        session: dict[str, Any] = (await client.post("/sessions")).json()
        before = await live_gauges(server)
        async with sse(client, f"/sessions/{session['id']}/events?after=0") as stream:
            assert (await stream.until("message")).data["seq"] == 1
            with_sse = await live_gauges(server)
            async with ws(server, f"/sessions/{session['id']}/live?after=0") as socket:
                assert (await socket.until("message"))["id"] == 1
                with_both = await live_gauges(server)
        await until_gauges(server, before)

    assert with_sse == (before[0] + 1, before[1])
    assert with_both == (before[0] + 1, before[1] + 1)
