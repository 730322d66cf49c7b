"""Who may open a live stream (SSE and WebSocket), what it shows them, and live tickets.

The rows are ``LIVE_MATRIX`` of ``tests/api/test_access.py``: a stream never ends, so the
Quart test client cannot take them, and they run here against the app served by Hypercorn,
in production mode. A refused SSE request gets the status as a problem; a refused WebSocket
is closed with 4000 + that status. What a stream carries is searched for text its reader
must never see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.access_world import (
    AUTH_REQUIRED,
    INTERNAL_A,
    SECRET_A,
    SECRET_B,
    World,
    build_world,
)
from tests.api.test_access import LIVE_MATRIX, PRINCIPALS, forbidden_text
from tests.live_support import LiveServer, sse, ws, ws_close_code

pytestmark = pytest.mark.timeout(120)

# (event, id, data); WebSocket ids as text, like SSE's.
Event = tuple[str, str | None, Any]
NextEvent = Callable[[], Awaitable[Event]]


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return AUTH_REQUIRED


async def world_of(server: LiveServer) -> World:
    return await build_world(server.app, server.app.test_client())


@contextlib.asynccontextmanager
async def opened(
    server: LiveServer, transport: str, path: str, headers: dict[str, str]
) -> AsyncIterator[NextEvent]:
    """A stream that must open; yields a function returning its next event."""
    if transport == "sse":
        async with server.client() as client, sse(client, path, **headers) as stream:

            async def next_sse() -> Event:
                event = await stream.next()
                return event.event, event.id, event.data

            yield next_sse
        return
    async with ws(server, path, **headers) as socket:

        async def next_ws() -> Event:
            frame = await socket.next()
            while frame["event"] == "heartbeat":
                frame = await socket.next()
            return frame["event"], None if frame["id"] is None else str(frame["id"]), frame["data"]

        yield next_ws


async def refusal(
    server: LiveServer, transport: str, path: str, headers: dict[str, str]
) -> tuple[int, str]:
    """(status, text) of a stream that must not open; a WebSocket's is its close code."""
    if transport == "ws":
        try:
            return await ws_close_code(server, path, **headers)
        except TimeoutError:
            raise AssertionError("the WebSocket stayed open") from None
    async with server.client() as client, client.stream("GET", path, headers=headers) as response:
        assert response.status_code != 200, "the stream started"
        await response.aread()
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert response.json()["status"] == response.status_code
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return response.status_code, response.text


def refused_as(transport: str, status: int) -> int:
    return 4000 + status if transport == "ws" else status


async def post(
    server: LiveServer, session: str, headers: dict[str, str], content: str, **extra: Any
) -> None:
    async with server.client(**headers) as client:
        response = await client.post(
            f"/sessions/{session}/messages",
            json={"content": content, **extra},
            headers={"Prefer": "return=minimal"},
        )
        assert response.status_code == 201, response.text


async def ticket_for(server: LiveServer, headers: dict[str, str]) -> str:
    async with server.client(**headers) as client:
        response = await client.post("/live/tickets")
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    ticket: str = response.json()["ticket"]
    assert ticket.startswith("clt_")
    return ticket


def tenant_of(world: World, principal: str) -> tuple[set[str], str, str]:
    """The caller's tenant: its sessions, one of them, and a staff caller who may post there."""
    if principal == "foreign_agent":
        return {world.foreign_session}, world.foreign_session, "foreign_agent"
    return {world.own_session, world.other_session}, world.own_session, "service_full"


async def post_decoy(server: LiveServer, world: World, principal: str) -> None:
    """A message in the other tenant, with its secret: no stream of the caller may carry it."""
    if principal == "foreign_agent":
        await post(server, world.own_session, world.headers["service_full"], f"{SECRET_A} decoy")
    else:
        decoy = f"{SECRET_B} decoy"
        await post(server, world.foreign_session, world.headers["foreign_agent"], decoy)


async def read_session_stream(
    server: LiveServer, world: World, transport: str, path: str, principal: str, own: bool
) -> str:
    """The whole history and a message posted live, as the caller's stream shows them."""
    session = world.own_session if own else world.foreign_session
    poster = "service_full" if own else "foreign_agent"
    sentinel = f"sentinel for {principal} over {transport}"
    async with opened(server, transport, f"{path}?after=0", world.headers[principal]) as next_event:
        seen = [await next_event()]
        kind, event_id, data = seen[0]
        assert (kind, event_id, data["seq"]) == ("message", "1", 1), seen[0]
        await post_decoy(server, world, principal)
        await post(server, session, world.headers[poster], sentinel)
        while seen[-1][2].get("content") != sentinel:
            seen.append(await next_event())
    seqs = [int(event_id or 0) for kind, event_id, _ in seen if kind == "message"]
    assert seqs == sorted(set(seqs)), f"out of order or repeated: {seqs}"
    return json.dumps([data for _, _, data in seen])


async def read_tenant_stream(
    server: LiveServer, world: World, transport: str, path: str, principal: str
) -> str:
    """The tenant's sessions replayed, then an internal note posted live."""
    sessions, session, poster = tenant_of(world, principal)
    sentinel = f"internal sentinel for {principal} over {transport}"
    async with opened(server, transport, f"{path}?after=0", world.headers[principal]) as next_event:
        seen: list[Event] = []
        while not sessions <= {data["id"] for kind, _, data in seen if kind == "session"}:
            seen.append(await next_event())
        await post_decoy(server, world, principal)
        await post(server, session, world.headers[poster], sentinel, visibility="internal")
        while not (seen[-1][0] == "message" and seen[-1][2].get("content") == sentinel):
            seen.append(await next_event())
    replayed = {data["id"] for kind, _, data in seen if kind == "session"}
    assert replayed == sessions, f"sessions shown: {replayed}"
    return json.dumps([data for _, _, data in seen])


def must_see(principal: str, own: bool, tenant_stream: bool) -> list[str]:
    """Marker texts the caller's session stream must show (its history with after=0)."""
    if tenant_stream:
        return []
    if not own:
        return [SECRET_B]
    return [SECRET_A] if principal == "customer" else [SECRET_A, INTERNAL_A]


@pytest.mark.parametrize("route", list(LIVE_MATRIX), ids=lambda route: f"{route[1]} {route[0]}")
async def test_live_access_matrix(server: LiveServer, route: tuple[str, str]) -> None:
    world = await world_of(server)
    transport, build, expected = LIVE_MATRIX[route]
    tenant_stream = "<uuid:session_id>" not in route[0]
    failures = []
    for principal in PRINCIPALS:
        for own in (True, False):
            cell = f"{principal} {'own' if own else 'foreign'}"
            _, path, _ = build(world, own)
            want = expected[principal][0 if own else 1]
            text = ""
            try:
                if want != 200:
                    code, text = await refusal(server, transport, path, world.headers[principal])
                    if code != refused_as(transport, want):
                        failures.append(f"{cell}: {code}, expected {refused_as(transport, want)}")
                elif tenant_stream:
                    text = await read_tenant_stream(server, world, transport, path, principal)
                else:
                    text = await read_session_stream(server, world, transport, path, principal, own)
            except Exception as error:  # one cell's failure must not hide the others
                failures.append(f"{cell}: expected {want}: {type(error).__name__}: {error}")
            leaked = [marker for marker in forbidden_text(world, principal, path) if marker in text]
            if leaked:
                failures.append(f"{cell}: stream has {leaked}")
            if want == 200:
                missing = [m for m in must_see(principal, own, tenant_stream) if m not in text]
                if missing:
                    failures.append(f"{cell}: stream lacks {missing}")
    assert not failures, "\n".join(failures)


# -- tickets -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(LIVE_MATRIX), ids=lambda route: f"{route[1]} {route[0]}")
async def test_a_ticket_opens_a_stream_once_without_an_authorization_header(
    server: LiveServer, route: tuple[str, str]
) -> None:
    world = await world_of(server)
    transport, build, _ = LIVE_MATRIX[route]
    _, path, _ = build(world, True)
    ticket = await ticket_for(server, world.headers["agent"])

    async with opened(server, transport, f"{path}?after=0&ticket={ticket}", {}) as next_event:
        kind, event_id, data = await next_event()
    if "<uuid:session_id>" in route[0]:
        assert (kind, event_id, data["seq"]) == ("message", "1", 1)
        session = f"/sessions/{world.own_session}"
        paths = {"sse": f"{session}/events", "ws": f"{session}/live"}
    else:
        assert kind == "session"
        assert data["id"] in {world.own_session, world.other_session}
        paths = {"sse": "/events", "ws": "/live"}
    for again, again_path in paths.items():  # used up, whichever transport tries it next
        code, _ = await refusal(server, again, f"{again_path}?ticket={ticket}", {})
        assert code == refused_as(again, 401), again


@pytest.mark.parametrize(
    "settings_overrides",
    [{**AUTH_REQUIRED, "live": {"ticket_seconds": 0.2}}],
    ids=["ticket-0.2s"],
)
async def test_an_expired_ticket_is_refused(server: LiveServer) -> None:
    world = await world_of(server)
    path = f"/sessions/{world.own_session}"
    before = datetime.now(UTC)
    async with server.client(**world.headers["agent"]) as client:
        response = await client.post("/live/tickets")
    after = datetime.now(UTC)
    assert response.status_code == 201, response.text
    expires_at = datetime.fromisoformat(response.json()["expires_at"])
    lifetime = timedelta(seconds=0.2)
    assert before + lifetime <= expires_at <= after + lifetime

    tickets = [response.json()["ticket"], await ticket_for(server, world.headers["agent"])]
    await asyncio.sleep(0.5)
    code, reason = await refusal(server, "ws", f"{path}/live?ticket={tickets[0]}", {})
    assert (code, reason) == (4401, "the ticket is not valid: unknown, used or expired")
    status, text = await refusal(server, "sse", f"{path}/events?ticket={tickets[1]}", {})
    assert status == 401
    assert json.loads(text)["detail"] == "the ticket is not valid: unknown, used or expired"


@pytest.mark.parametrize(
    ("ticket", "status"),
    [
        ("clt_" + "A" * 43, 401),  # the shape of a ticket, never issued
        ("not-a-ticket", 401),
        ("", 401),
        ("clt_" + "A" * 125, 422),  # longer than any ticket
    ],
    ids=["unknown", "garbage", "empty", "too-long"],
)
async def test_a_ticket_that_was_never_issued_is_refused(
    server: LiveServer, ticket: str, status: int
) -> None:
    world = await world_of(server)
    session = f"/sessions/{world.own_session}"
    for transport, path in (("ws", f"{session}/live"), ("sse", f"{session}/events")):
        for route in (path, "/live" if transport == "ws" else "/events"):
            # A bad ticket is not made up for by a good header: the ticket is the credential.
            for headers in ({}, world.headers["agent"]):
                code, _ = await refusal(server, transport, f"{route}?ticket={ticket}", headers)
                assert code == refused_as(transport, status), (transport, route, headers)


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_ticket_carries_only_what_its_credential_may(
    server: LiveServer, transport: str
) -> None:
    world = await world_of(server)
    stream = "/events" if transport == "sse" else "/live"  # the tenant's; a session's suffix
    cases = [
        ("customer", f"/sessions/{world.own_session}{stream}", 200),
        ("customer", f"/sessions/{world.other_session}{stream}", 404),
        ("customer", f"/sessions/{world.foreign_session}{stream}", 404),
        ("customer", stream, 403),
        ("service_write_only", f"/sessions/{world.own_session}{stream}", 403),
        ("foreign_agent", f"/sessions/{world.own_session}{stream}", 404),
    ]
    for principal, path, status in cases:
        ticket = await ticket_for(server, world.headers[principal])
        if status == 200:
            async with opened(server, transport, f"{path}?after=0&ticket={ticket}", {}) as events:
                kind, event_id, _ = await events()
            assert (kind, event_id) == ("message", "1"), (principal, path)
        else:
            code, _ = await refusal(server, transport, f"{path}?ticket={ticket}", {})
            assert code == refused_as(transport, status), (principal, path)


async def test_a_ticket_of_a_deactivated_agent_is_refused(server: LiveServer) -> None:
    world = await world_of(server)
    ticket = await ticket_for(server, world.headers["agent"])
    async with server.client(**world.headers["admin"]) as client:
        response = await client.patch(f"/agents/{world.own_agent}", json={"active": False})
    assert response.status_code == 200, response.text

    code, _ = await refusal(server, "ws", f"/sessions/{world.own_session}/live?ticket={ticket}", {})
    assert code == 4401
    # Its key is refused as well: a ticket is worth no more than its credential.
    async with server.client(**world.headers["agent"]) as client:
        assert (await client.post("/live/tickets")).status_code == 401
