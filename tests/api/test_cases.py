"""Sessions as support cases: lifecycle, events, internal notes, edits, tombstones, inbox."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import text

from chat_service.routes.state import app_state
from tests.api.access_world import AUTH_REQUIRED, INTERNAL_A, SECRET_A, World, build_world
from tests.factories import problem_of


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return AUTH_REQUIRED


@pytest.fixture
async def world(app: Quart, client: TestClientProtocol) -> World:
    return await build_world(app, client)


class Caller:
    """Requests as one principal of the world."""

    def __init__(self, client: TestClientProtocol, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        options = {} if body is None else {"json": body}
        return await self.client.open(path, method=method, headers=self.headers, **options)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.call(method, path, body)
        assert response.status_code == status, await response.get_data(as_text=True)
        return await response.get_json() if status != 204 else None


def as_(world: World, client: TestClientProtocol, principal: str) -> Caller:
    return Caller(client, world.headers[principal])


async def history(caller: Caller, session: str) -> list[dict[str, Any]]:
    page = await caller.ok("GET", f"/sessions/{session}/messages?limit=200")
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_status_changes_are_recorded_as_events_with_their_own_seq(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    path = f"/sessions/{world.own_session}"
    before = (await agent.ok("GET", path))["messages"][-1]["seq"]

    pending = await agent.ok("PATCH", path, {"status": "pending"})
    assigned = await agent.ok("PATCH", path, {"assignee_id": world.own_agent})

    assert pending["status"] == "pending"
    assert assigned["status"] == "assigned"
    assert assigned["assignee_id"] == world.own_agent
    events = [m for m in await history(agent, world.own_session) if m["type"] == "event"]
    assert [(e["seq"], e["event"]["name"]) for e in events] == [
        (before + 1, "status_changed"),
        (before + 2, "assignee_changed"),
        (before + 3, "status_changed"),
    ]
    assert events[0]["event"] == {"name": "status_changed", "from": "open", "to": "pending"}
    assert events[1]["event"]["to"] == world.own_agent
    assert all(e["author_type"] == "system" and e["visibility"] == "public" for e in events)
    # No change, no event.
    await agent.ok("PATCH", path, {"status": "assigned"})
    assert len(await history(agent, world.own_session)) == before + 3


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        ([], {"status": "assigned"}),  # assigned needs an assignee
        ([{"status": "pending"}], {"status": "open"}),
        ([{"status": "resolved"}], {"status": "open"}),
        ([{"status": "closed"}], {"status": "pending"}),
        ([{"status": "closed"}], {"priority": "high"}),
    ],
)
async def test_illegal_changes_answer_409_and_change_nothing(
    client: TestClientProtocol, world: World, steps: list[dict[str, Any]], illegal: dict[str, Any]
) -> None:
    agent = as_(world, client, "agent")
    path = f"/sessions/{world.own_session}"
    for step in steps:
        await agent.ok("PATCH", path, step)
    before = await agent.ok("GET", path)

    await problem_of(await agent.call("PATCH", path, illegal), 409)

    assert await agent.ok("GET", path) == before


async def test_an_assigned_case_cannot_stay_assigned_without_its_agent(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    path = f"/sessions/{world.own_session}"
    await agent.ok("PATCH", path, {"assignee_id": world.own_agent})
    before = await agent.ok("GET", path)

    response = await agent.call("PATCH", path, {"status": "assigned", "assignee_id": None})

    await problem_of(response, 409)
    assert await agent.ok("GET", path) == before
    unassigned = await agent.ok("PATCH", path, {"assignee_id": None})
    assert (unassigned["status"], unassigned["assignee_id"]) == ("pending", None)


async def test_full_lifecycle_then_a_closed_session_refuses_messages(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}"
    for status in ("pending", "resolved", "closed"):
        assert (await agent.ok("PATCH", path, {"status": status}))["status"] == status

    for caller in (customer, agent):
        response = await caller.call("POST", f"{path}/messages", {"content": "still there?"})
        await problem_of(response, 409)
    assert (await customer.ok("GET", path))["status"] == "closed"


@pytest.mark.parametrize(("assign", "reopened_as"), [(False, "pending"), (True, "assigned")])
async def test_a_customer_message_reopens_a_resolved_session(
    client: TestClientProtocol, world: World, assign: bool, reopened_as: str
) -> None:
    agent = as_(world, client, "agent")
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}"
    if assign:
        await agent.ok("PATCH", path, {"assignee_id": world.own_agent})
    await agent.ok("PATCH", path, {"status": "resolved"})

    posted = await customer.ok("POST", f"{path}/messages", {"content": "It broke again."}, 201)

    session = await agent.ok("GET", path)
    assert session["status"] == reopened_as
    last_two = session["messages"][-2:]
    assert last_two[0]["content"] == "It broke again."
    assert last_two[1]["type"] == "event"
    assert last_two[1]["seq"] == last_two[0]["seq"] + 1
    assert last_two[1]["event"] == {
        "name": "status_changed",
        "from": "resolved",
        "to": reopened_as,
        "reason": "customer_message",
    }
    assert posted["messages"][-1]["content"] == "It broke again."


async def test_an_agent_message_does_not_reopen(client: TestClientProtocol, world: World) -> None:
    agent = as_(world, client, "agent")
    path = f"/sessions/{world.own_session}"
    await agent.ok("PATCH", path, {"status": "resolved"})
    await agent.ok("POST", f"{path}/messages", {"content": "Anything else?"}, 201)
    assert (await agent.ok("GET", path))["status"] == "resolved"


async def test_internal_notes_and_triage_never_reach_the_customer(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}"
    await agent.ok("PATCH", path, {"priority": "urgent", "tags": ["vip", "billing"]})
    note = await agent.ok(
        "POST", f"{path}/messages", {"content": "Refund approved", "visibility": "internal"}, 201
    )

    staff_view = await agent.ok("GET", path)
    assert staff_view["priority"] == "urgent"
    assert staff_view["tags"] == ["billing", "vip"]
    assert {"Refund approved", INTERNAL_A} <= {m["content"] for m in staff_view["messages"]}
    bodies = [
        await (await customer.call("GET", path)).get_data(as_text=True),
        await (await customer.call("GET", f"{path}/messages")).get_data(as_text=True),
        await (await customer.call("POST", f"{path}/messages", {"content": "Thanks!"})).get_data(
            as_text=True
        ),
    ]
    for body in bodies:
        assert "Refund approved" not in body
        assert INTERNAL_A not in body
        assert "urgent" not in body
        assert "vip" not in body
    customer_view = await customer.ok("GET", path)
    assert "priority" not in customer_view
    assert "tags" not in customer_view
    note_id = note["messages"][-1]["id"]
    await problem_of(await customer.call("GET", f"{path}/messages/{note_id}"), 404)
    await problem_of(
        await customer.call("PATCH", f"{path}/messages/{note_id}", {"content": "x"}), 404
    )
    internal = {"content": "psst", "visibility": "internal"}
    await problem_of(await customer.call("POST", f"{path}/messages", internal), 403)


async def test_assignee_must_be_an_active_agent_of_the_tenant(
    client: TestClientProtocol, world: World
) -> None:
    admin = as_(world, client, "admin")
    path = f"/sessions/{world.own_session}"
    for assignee in (world.foreign_agent, "01a20000-0000-7000-8000-000000000000"):
        body = await problem_of(await admin.call("PATCH", path, {"assignee_id": assignee}), 422)
        assert body["errors"][0]["pointer"] == "#/assignee_id"
    await admin.ok("PATCH", f"/agents/{world.own_agent}", {"active": False})
    await problem_of(await admin.call("PATCH", path, {"assignee_id": world.own_agent}), 422)


async def test_the_author_edits_within_the_window(
    app: Quart, client: TestClientProtocol, world: World
) -> None:
    customer = as_(world, client, "customer")
    agent = as_(world, client, "agent")
    path = f"/sessions/{world.own_session}/messages/{world.own_message}"

    edited = await customer.ok("PATCH", path, {"content": "Corrected text"})

    assert edited["content"] == "Corrected text"
    assert edited["edited_at"] is not None
    assert (await agent.ok("GET", path))["content"] == "Corrected text"
    await problem_of(await agent.call("PATCH", path, {"content": "not mine"}), 403)
    await problem_of(await customer.call("PATCH", path, {"content": " "}), 422)


@pytest.mark.parametrize(
    "settings_overrides", [{**AUTH_REQUIRED, "sessions": {"edit_window_seconds": 0}}]
)
async def test_edits_after_the_window_answer_409(client: TestClientProtocol, world: World) -> None:
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}/messages/{world.own_message}"
    await problem_of(await customer.call("PATCH", path, {"content": "too late"}), 409)
    assert (await customer.ok("GET", path))["content"] == SECRET_A


async def test_deletion_leaves_a_tombstone_without_the_content(
    app: Quart, client: TestClientProtocol, world: World
) -> None:
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}/messages/{world.own_message}"
    before = await customer.ok("GET", path)

    await customer.ok("DELETE", path, status=204)
    await customer.ok("DELETE", path, status=204)

    after = await customer.ok("GET", path)
    assert after["deleted"] is True
    assert after["content"] == ""
    assert after["seq"] == before["seq"]
    async with app_state(app).db.engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM messages WHERE content LIKE :marker"),
            {"marker": f"%{SECRET_A}%"},
        )
    assert found == 0
    await problem_of(await customer.call("PATCH", path, {"content": "back"}), 409)


async def test_events_cannot_be_edited_or_deleted(client: TestClientProtocol, world: World) -> None:
    admin = as_(world, client, "admin")
    session = f"/sessions/{world.own_session}"
    await admin.ok("PATCH", session, {"status": "pending"})
    event = (await admin.ok("GET", session))["messages"][-1]
    assert event["type"] == "event"
    await problem_of(await admin.call("DELETE", f"{session}/messages/{event['id']}"), 403)
    await problem_of(
        await admin.call("PATCH", f"{session}/messages/{event['id']}", {"content": "x"}), 403
    )


async def test_inbox_orders_by_last_activity_and_filters(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    own, other = world.own_session, world.other_session

    first = await agent.ok("GET", "/sessions")
    assert [item["id"] for item in first["items"]] == [other, own]
    await agent.ok("POST", f"/sessions/{own}/messages", {"content": "bump"}, 201)
    assert [item["id"] for item in (await agent.ok("GET", "/sessions"))["items"]] == [own, other]

    await agent.ok(
        "PATCH", f"/sessions/{own}", {"assignee_id": world.own_agent, "priority": "high"}
    )
    await agent.ok("PATCH", f"/sessions/{other}", {"tags": ["billing"]})

    async def ids(query: str) -> list[str]:
        return [item["id"] for item in (await agent.ok("GET", f"/sessions?{query}"))["items"]]

    assert await ids("status=assigned") == [own]
    assert await ids("status=open,pending") == [other]
    assert await ids("assignee=me") == [own]
    assert await ids(f"assignee={world.own_agent}") == [own]
    assert await ids("assignee=none") == [other]
    assert await ids("priority=high") == [own]
    assert await ids("tag=billing") == [other]
    assert await ids("q=secret-c2") == [other]  # case-insensitive, in the messages
    assert await ids("q=100%25") == []  # LIKE wildcards are literal
    assert await ids("status=closed") == []


async def test_inbox_pages_cover_every_session_once(
    client: TestClientProtocol, world: World
) -> None:
    service = as_(world, client, "service_full")
    for _ in range(5):
        await service.ok("POST", "/sessions", status=201)
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=3" + (f"&after={cursor}" if cursor else "")
        page = await service.ok("GET", f"/sessions?{query}")
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    await problem_of(await service.call("GET", "/sessions?after=bogus"), 400)
    for bad in ("status=done", "limit=0", "assignee=someone", "priority=max", "color=red"):
        await problem_of(await service.call("GET", f"/sessions?{bad}"), 422)


async def test_unread_counts_follow_the_read_position(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    admin = as_(world, client, "admin")
    customer = as_(world, client, "customer")
    own = world.own_session

    async def unread(caller: Caller) -> int:
        items = (await caller.ok("GET", "/sessions"))["items"]
        return next(item["unread_count"] for item in items if item["id"] == own)

    # The customer's message and the service key's internal note; not the greeting.
    assert await unread(agent) == 2
    session = await agent.ok("GET", f"/sessions/{own}")
    await agent.ok("POST", f"/sessions/{own}/read", {"seq": session["messages"][-1]["seq"]}, 204)
    assert await unread(agent) == 0
    assert await unread(admin) == 2  # read positions are per agent

    await customer.ok("POST", f"/sessions/{own}/messages", {"content": "hello?"}, 201)
    await agent.ok("POST", f"/sessions/{own}/messages", {"content": "mine"}, 201)
    assert await unread(agent) == 1  # the agent's own message does not count
    assert await unread(admin) == 4

    await agent.ok("POST", f"/sessions/{own}/read", {"seq": 1}, 204)  # never moves back
    assert await unread(agent) == 1
    # A position in another session says nothing about this one.
    await admin.ok("POST", f"/sessions/{world.other_session}/read", {"seq": 2}, 204)
    assert await unread(admin) == 4
    body = await problem_of(await agent.call("POST", f"/sessions/{own}/read", {"seq": 999}), 422)
    assert body["errors"][0]["pointer"] == "#/seq"


async def test_duplicate_tags_are_one_tag(client: TestClientProtocol, world: World) -> None:
    agent = as_(world, client, "agent")
    path = f"/sessions/{world.own_session}"
    assert (await agent.ok("PATCH", path, {"tags": ["vip", "vip", "a"]}))["tags"] == ["a", "vip"]


async def test_the_answer_to_a_reopening_message_shows_the_reopened_session(
    client: TestClientProtocol, world: World
) -> None:
    agent = as_(world, client, "agent")
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}"
    await agent.ok("PATCH", path, {"status": "resolved"})

    posted = await customer.ok("POST", f"{path}/messages", {"content": "Again."}, 201)

    assert posted["status"] == "pending"
    assert posted["messages"][-1]["content"] == "Again."


async def test_a_write_only_key_never_reads_the_session_through_its_writes(
    client: TestClientProtocol, world: World
) -> None:
    writer = as_(world, client, "service_write_only")
    path = f"/sessions/{world.own_session}"

    posted = await writer.ok("POST", f"{path}/messages", {"content": "Order shipped."}, 201)

    assert posted["content"] == "Order shipped."  # the message alone, not the session
    assert "messages" not in posted
    assert INTERNAL_A not in str(posted)
    await problem_of(await writer.call("PATCH", path, {}), 403)


@pytest.mark.parametrize("principal", ["service_full", "anonymous_local"])
async def test_assignee_me_needs_an_agent(
    client: TestClientProtocol, world: World, principal: str
) -> None:
    headers = world.headers.get(principal, {})
    response = await client.get("/sessions?assignee=me", headers=headers)
    if principal == "anonymous_local":
        await problem_of(response, 401)  # production mode: no credential, no inbox
        return
    body = await problem_of(response, 422)
    assert body["errors"][0]["parameter"] == "assignee"


async def test_an_edit_and_a_deletion_at_once_never_leave_text_in_a_tombstone(
    app: Quart, client: TestClientProtocol, world: World
) -> None:
    customer = as_(world, client, "customer")
    path = f"/sessions/{world.own_session}/messages/{world.own_message}"
    for round_ in range(10):
        posted = await customer.ok(
            "POST", f"/sessions/{world.own_session}/messages", {"content": f"m{round_}"}, 201
        )
        message = f"/sessions/{world.own_session}/messages/{posted['messages'][-1]['id']}"
        await asyncio.gather(
            customer.call("PATCH", message, {"content": f"edited {round_}"}),
            customer.call("DELETE", message),
        )
        after = await customer.ok("GET", message)
        assert after["deleted"] is True
        assert after["content"] == ""
    assert (await customer.ok("GET", path))["deleted"] is False


async def test_search_follows_edits_and_deletions(client: TestClientProtocol, world: World) -> None:
    """The text index (a trigram index on both databases) tracks every change of text."""
    customer = as_(world, client, "customer")
    agent = as_(world, client, "agent")
    own = world.own_session
    path = f"/sessions/{own}/messages/{world.own_message}"

    async def found(text: str) -> bool:
        page = await agent.ok("GET", f"/sessions?q={text}")
        return own in [item["id"] for item in page["items"]]

    assert await found("secret-a-customer")
    await customer.ok("PATCH", path, {"content": "Parcel ZX81 is lost"})
    assert not await found("secret-a-customer")
    assert await found("parcel zx81")
    assert await found("zx")  # shorter than a trigram: still found
    await customer.ok("DELETE", path, status=204)
    assert not await found("zx81")


async def test_unread_counts_stop_at_100(client: TestClientProtocol, world: World) -> None:
    customer = as_(world, client, "customer")
    agent = as_(world, client, "agent")
    own = world.own_session
    for index in range(100):
        response = await customer.call(
            "POST", f"/sessions/{own}/messages", {"content": f"ping {index}"}
        )
        assert response.status_code == 201
    items = (await agent.ok("GET", "/sessions"))["items"]
    assert next(item["unread_count"] for item in items if item["id"] == own) == 100
