"""Sessions and messages through the HTTP API against a model, driven by Hypothesis.

A ``RuleBasedStateMachine`` opens sessions, posts messages as customers and as an agent
(internal notes included), changes status and assignee, reads sessions, pages through
their messages with random page sizes and resumes from cursors taken earlier. Every
answer must match a plain model exactly: seqs 1..N without gaps, contents, authors,
order, events, the lifecycle's 403s and 409s, and what a customer may not see. It runs
on SQLite and on PostgreSQL.

Hypothesis rules are synchronous, so the application runs on an event loop of its own
(``asyncio.Runner``), started once per backend; each example starts on a wiped database.
A failure prints the shortest sequence of steps found that still fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from quart import Quart

from chat_service.app import create_app
from chat_service.model import DEFAULT_TENANT_ID, Role
from chat_service.routes.state import app_state
from chat_service.services import agents, api_keys
from tests.api.access_world import AUTH_REQUIRED
from tests.conftest import wipe
from tests.support import load_test_settings

# Small limits, so that a few messages already make several pages and a truncated session.
PAGE_DEFAULT = 3
PAGE_MAX = 5
INLINE = 4  # messages in GET /sessions/{id}
GREETING = "Hello, how may I help you?"
STATUSES = ("open", "pending", "assigned", "resolved", "closed")
# docs/api.md, Lifecycle: nothing goes back to open, and closed is final.
TRANSITIONS = {
    "open": {"pending", "assigned", "resolved", "closed"},
    "pending": {"assigned", "resolved", "closed"},
    "assigned": {"pending", "resolved", "closed"},
    "resolved": {"pending", "assigned", "closed"},
    "closed": set(),
}
# The same examples on every run, a few seconds per backend; more for a deeper search.
EXAMPLES = int(os.environ.get("CHAT_SERVICE_TEST_STATE_MACHINE_EXAMPLES", "30"))
SETTINGS = settings(
    derandomize=True,
    database=None,
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    # Every step is HTTP round trips to a real database: slow by Hypothesis' measure.
    suppress_health_check=[HealthCheck.too_slow],
    # No "explain" phase: its line tracing slows a failing run and adds little here.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
# Situations the examples must reach at least once: the draws are fixed, and a test that
# never gets there would pass without testing it.
REACHED = {
    "a truncated session",
    "a customer's note refused",
    "a post into a closed session",
    "a reopening",
    "an illegal change",
    "several pages",
    "a note hidden from the customer",
    "a cursor older than the last post",
}

texts = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24
).filter(str.strip)
limits = st.none() | st.integers(1, PAGE_MAX)


@dataclass
class Entry:
    """A message as the model expects the API to show it."""

    seq: int
    author_type: str
    content: str
    author_id: str | None = None
    visibility: str = "public"
    event: dict[str, Any] | None = None
    id: str | None = None  # known once the API has shown it

    def shown(self) -> tuple[Any, ...]:
        kind = "message" if self.event is None else "event"
        return (
            self.seq,
            self.author_type,
            self.author_id,
            kind,
            self.visibility,
            self.content,
            self.event,
        )


def shown(item: dict[str, Any]) -> tuple[Any, ...]:
    """What ``Entry.shown`` gives, from a message the API answered with."""
    assert item["deleted"] is False
    assert item["edited_at"] is None
    keys = ("seq", "author_type", "author_id", "type", "visibility", "content", "event")
    return tuple(item[key] for key in keys)


def check_messages(items: list[dict[str, Any]], expected: list[Entry]) -> None:
    """The API's ``items`` are exactly the model's ``expected`` messages, in order."""
    assert [shown(item) for item in items] == [entry.shown() for entry in expected]
    for item, entry in zip(items, expected, strict=True):
        entry.id = entry.id or item["id"]  # an id, once seen, never changes
        assert item["id"] == entry.id


@dataclass(frozen=True)
class Post:
    """One message to post: as the customer or the agent, an internal note or not."""

    content: str
    customer: bool = False
    internal: bool = False
    minimal: bool = False  # Prefer: return=minimal


posts = st.builds(
    Post, content=texts, customer=st.booleans(), internal=st.booleans(), minimal=st.booleans()
)


@dataclass
class Case:
    """A session as the model holds it."""

    id: str
    token: str
    status: str = "open"
    assignee: str | None = None
    messages: list[Entry] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return len(self.messages)

    def visible(self, customer: bool, *, after: int = 0, up_to: int | None = None) -> list[Entry]:
        end = self.last_seq if up_to is None else up_to
        return [
            entry
            for entry in self.messages
            if after < entry.seq <= end and not (customer and entry.visibility == "internal")
        ]

    def add(self, author_type: str, content: str, **details: Any) -> Entry:
        """Append a message with the next seq: the model's seqs are 1..N by construction."""
        entry = Entry(self.last_seq + 1, author_type, content, **details)
        self.messages.append(entry)
        return entry

    def change_status(self, new: str, *, author_id: str | None, reason: str | None = None) -> None:
        event: dict[str, Any] = {"name": "status_changed", "from": self.status, "to": new}
        text = f"Status changed from {self.status} to {new}."
        if reason:
            event["reason"] = reason
            text = f"Reopened by the customer's message: {self.status} to {new}."
        self.add("system", text, author_id=author_id, event=event)
        self.status = new

    def change_assignee(self, new: str | None, *, author_id: str) -> None:
        event = {"name": "assignee_changed", "from": self.assignee, "to": new}
        text = f"Assignee changed from {self.assignee or 'nobody'} to {new or 'nobody'}."
        self.add("system", text, author_id=author_id, event=event)
        self.assignee = new


@dataclass(frozen=True)
class Cursor:
    """A ``next_cursor`` the API gave: which list, and the seq it stands after."""

    session: str
    customer: bool
    after: int
    value: str
    issued_at: int  # the session's last seq when the cursor was given


class Api:
    """The started application on its own event loop, called synchronously."""

    def __init__(self, runner: asyncio.Runner, app: Quart) -> None:
        self.runner = runner
        self.app = app
        self.client = app.test_client()

    def call(
        self, method: str, path: str, token: str, body: Any = None, *, minimal: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` of one request with ``token`` as its credential."""
        headers = {"Authorization": f"Bearer {token}"}
        if minimal:
            headers["Prefer"] = "return=minimal"

        async def request() -> tuple[int, dict[str, Any]]:
            options = {} if body is None else {"json": body}
            response = await self.client.open(path, method=method, headers=headers, **options)
            return response.status_code, await response.get_json(force=True)

        return self.runner.run(request())

    def reset(self) -> tuple[str, str]:
        """Wipe the database and add an agent: its id and its API key."""

        async def reset() -> tuple[str, str]:
            db = app_state(self.app).db
            await wipe(db)
            agent = await agents.add_agent(
                db, DEFAULT_TENANT_ID, name="Alice", email=None, role=Role.AGENT
            )
            key = await api_keys.add_api_key(
                db,
                DEFAULT_TENANT_ID,
                name="Alice",
                scopes=api_keys.role_scopes(Role.AGENT),
                agent_id=agent.id,
            )
            assert key.key is not None
            return str(agent.id), key.key

        return self.runner.run(reset())


@contextlib.contextmanager
def running_api(database_url: str) -> Iterator[Api]:
    """The application on ``database_url``, started (``before_serving`` has run)."""
    overrides = {
        **AUTH_REQUIRED,
        "database": {"url": database_url},
        "limits": {
            "page_size_default": PAGE_DEFAULT,
            "page_size_max": PAGE_MAX,
            "session_inline_messages": INLINE,
        },
    }
    app = create_app(load_test_settings(**overrides))
    lifespan = app.test_app()
    with asyncio.Runner() as runner:
        runner.run(lifespan.startup())
        try:
            yield Api(runner, app)
        finally:
            runner.run(lifespan.shutdown())


class SessionsAndMessages(RuleBasedStateMachine):
    """The API against the model, one step at a time."""

    sessions = Bundle("sessions")

    def __init__(self, api: Api, seen: Counter[str]) -> None:
        super().__init__()
        self.api = api
        self.seen = seen  # how often each of REACHED came up
        self.agent, self.key = api.reset()
        self.model: dict[str, Case] = {}
        self.touched: str | None = None  # the session the last step used
        self.cursors: list[Cursor] = []  # oldest first

    def token(self, case: Case, customer: bool) -> str:
        return case.token if customer else self.key

    def check_session(self, body: dict[str, Any], case: Case, customer: bool, up_to: int) -> None:
        """A session in an answer: the model's, with its messages up to ``up_to``."""
        assert body["id"] == case.id
        assert body["status"] == case.status
        assert body["assignee_id"] == case.assignee
        visible = case.visible(customer, up_to=up_to)
        check_messages(body["messages"], visible[-INLINE:])
        assert body.get("messages_truncated", False) == (len(visible) > INLINE)
        # Priority and tags are the support side's triage.
        assert ("priority" in body) == ("tags" in body) == (not customer)
        self.seen["a truncated session"] += len(visible) > INLINE

    def read_session(self, case: Case, customer: bool) -> None:
        status, body = self.api.call("GET", f"/sessions/{case.id}", self.token(case, customer))
        assert status == 200, body
        self.check_session(body, case, customer, up_to=case.last_seq)

    # A few open sessions at a time, so that each grows long enough to page through.
    @precondition(lambda self: sum(case.status != "closed" for case in self.model.values()) < 3)
    @rule(target=sessions)
    def open_session(self) -> str:
        status, body = self.api.call("POST", "/sessions", self.key)
        assert status == 201, body
        case = Case(body["id"], body["customer_token"])
        case.add("service_agent", GREETING)
        self.model[case.id] = case
        self.check_session(body, case, customer=False, up_to=case.last_seq)
        self.touched = case.id
        return case.id

    @rule(session=sessions, posts=st.lists(posts, min_size=1, max_size=3))
    def post_messages(self, session: str, posts: list[Post]) -> None:
        for post in posts:
            self.post_message(self.model[session], post)

    def post_message(self, case: Case, post: Post) -> None:
        self.touched = case.id
        body: dict[str, Any] = {"content": post.content}
        if post.internal:
            body["visibility"] = "internal"
        path = f"/sessions/{case.id}/messages"
        token = self.token(case, post.customer)
        status, answer = self.api.call("POST", path, token, body, minimal=post.minimal)
        if post.customer and post.internal:
            assert status == 403, answer
            self.seen["a customer's note refused"] += 1
            return
        if case.status == "closed":
            assert status == 409, answer
            assert answer["type"] == "urn:chat-service:problem:conflict"
            self.seen["a post into a closed session"] += 1
            return
        assert status == 201, answer
        entry = case.add(
            "customer" if post.customer else "service_agent",
            post.content,
            author_id=None if post.customer else self.agent,
            visibility="internal" if post.internal else "public",
        )
        if post.customer and case.status == "resolved":
            reopened = "assigned" if case.assignee else "pending"
            case.change_status(reopened, author_id=None, reason="customer_message")
            self.seen["a reopening"] += 1
        if post.minimal:
            check_messages([answer], [entry])
        else:  # the session as it stood with this message last
            self.check_session(answer, case, post.customer, up_to=entry.seq)

    # Chance alone rarely has a customer write into a resolved case.
    @precondition(lambda self: any(case.status == "resolved" for case in self.model.values()))
    @rule(data=st.data(), content=texts, minimal=st.booleans())
    def customer_writes_into_resolved(
        self, data: st.DataObject, content: str, minimal: bool
    ) -> None:
        resolved = sorted(key for key, case in self.model.items() if case.status == "resolved")
        session = data.draw(st.sampled_from(resolved), label="session")
        self.post_message(self.model[session], Post(content, customer=True, minimal=minimal))

    @rule(
        session=sessions,
        status=st.none() | st.sampled_from(STATUSES),
        assignee=st.sampled_from(["keep", "me", "nobody"]),
    )
    def change_case(self, session: str, status: str | None, assignee: str) -> None:
        case = self.model[session]
        self.touched = session
        patch: dict[str, Any] = {} if status is None else {"status": status}
        if assignee != "keep":
            patch["assignee_id"] = self.agent if assignee == "me" else None
        code, answer = self.api.call("PATCH", f"/sessions/{case.id}", self.key, patch)
        new_assignee = patch.get("assignee_id", case.assignee)
        if status is None:  # assigning or unassigning moves the status along
            if new_assignee and not case.assignee and case.status in ("open", "pending"):
                status = "assigned"
            elif not new_assignee and case.status == "assigned":
                status = "pending"
        moves = status is not None and status != case.status
        outcome = status or case.status
        if (
            case.status == "closed"
            or (moves and outcome not in TRANSITIONS[case.status])
            or (outcome == "assigned" and new_assignee is None)
        ):
            assert code == 409, answer  # the invariant reads the session back: unchanged
            self.seen["an illegal change"] += case.status != "closed"
            return
        assert code == 200, answer
        if new_assignee != case.assignee:  # events in this order: assignee, then status
            case.change_assignee(new_assignee, author_id=self.agent)
        if moves:
            case.change_status(outcome, author_id=self.agent)
        self.check_session(answer, case, customer=False, up_to=case.last_seq)

    @rule(session=sessions, customer=st.booleans())
    def get_session(self, session: str, customer: bool) -> None:
        self.read_session(self.model[session], customer)

    @rule(session=sessions, customer=st.booleans(), limit=limits)
    def page_through(self, session: str, customer: bool, limit: int | None) -> None:
        self.read_pages(self.model[session], customer, limit, start=None)

    # A list rather than a Bundle: a Bundle hands out its newest values first, while
    # sampled_from leans to the oldest cursors, which have the most posted after them.
    @precondition(lambda self: self.cursors)
    @rule(data=st.data(), limit=limits)
    def resume(self, data: st.DataObject, limit: int | None) -> None:
        """Page on from a cursor taken earlier: what was posted since comes too."""
        cursor = data.draw(st.sampled_from(self.cursors), label="cursor")
        case = self.model[cursor.session]
        self.seen["a cursor older than the last post"] += case.last_seq > cursor.issued_at
        self.read_pages(case, cursor.customer, limit, start=cursor)

    def read_pages(
        self, case: Case, customer: bool, limit: int | None, start: Cursor | None
    ) -> None:
        """Follow ``next_cursor`` to the end: every page is the model's, to the message.

        Keeps the cursors for ``resume``.
        """
        size = limit or PAGE_DEFAULT
        expected = case.visible(customer, after=0 if start is None else start.after)
        pages = [expected[index : index + size] for index in range(0, len(expected), size)]
        cursor = None if start is None else start.value
        seqs: list[int] = []
        for number, page in enumerate(pages or [[]]):
            query = {"limit": limit, "after": cursor}
            suffix = "&".join(f"{name}={value}" for name, value in query.items() if value)
            path = f"/sessions/{case.id}/messages" + (f"?{suffix}" if suffix else "")
            status, body = self.api.call("GET", path, self.token(case, customer))
            assert status == 200, body
            check_messages(body["items"], page)
            seqs += [item["seq"] for item in body["items"]]
            cursor = body["next_cursor"]
            if number >= len(pages) - 1:
                assert cursor is None, "the last page has no next cursor"
                break
            assert cursor is not None
            self.cursors.append(Cursor(case.id, customer, page[-1].seq, cursor, case.last_seq))
        assert seqs == sorted(set(seqs)), "seqs strictly increase from page to page"
        if start is None and not customer:  # the support side sees every seq
            assert seqs == list(range(1, case.last_seq + 1))
        self.seen["several pages"] += len(pages) > 1
        self.seen["a note hidden from the customer"] += customer and len(seqs) < case.last_seq

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def customers_see_only_their_own(self, data: st.DataObject) -> None:
        own, other = data.draw(st.permutations(sorted(self.model)), label="sessions")[:2]
        for path in (f"/sessions/{other}", f"/sessions/{other}/messages"):
            status, body = self.api.call("GET", path, self.model[own].token)
            assert status == 404, body

    @invariant()
    def last_session_reads_as_the_model(self) -> None:
        """The session the last step used, read back by the support side."""
        if self.touched is not None:
            self.read_session(self.model[self.touched], customer=False)


# Hypothesis stops shrinking a failure after five minutes and then reports it; the
# default timeout would cut that report off.
@pytest.mark.timeout(600 + EXAMPLES)
def test_sessions_and_messages_follow_the_model(database_url: str) -> None:
    seen: Counter[str] = Counter()
    with running_api(database_url) as api:
        run_state_machine_as_test(
            functools.partial(SessionsAndMessages, api, seen),  # type: ignore[arg-type]
            settings=SETTINGS,
        )
    missing = REACHED - {name for name, count in seen.items() if count}
    assert not missing, f"the examples never reached {sorted(missing)}: steer rules or settings"
