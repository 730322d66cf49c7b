"""Sequence numbers under concurrent writers, and clients that vanish mid-request."""

from __future__ import annotations

import asyncio
import time

from quart.typing import TestClientProtocol

from tests.factories import create_session, post_message

WRITERS = 8
MESSAGES_PER_WRITER = 250


async def seqs_of(client: TestClientProtocol, session_id: str) -> list[int]:
    seqs, cursor = [], None
    while True:
        query = "limit=200" + (f"&after={cursor}" if cursor else "")
        body = await (await client.get(f"/sessions/{session_id}/messages?{query}")).get_json()
        seqs += [m["seq"] for m in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            return seqs


async def test_concurrent_writers_get_unique_gapless_seqs(client: TestClientProtocol) -> None:
    session = await create_session(client)
    statuses: list[int] = []

    async def writer(number: int) -> None:
        for index in range(MESSAGES_PER_WRITER):
            response = await client.post(
                f"/sessions/{session['id']}/messages",
                json={"content": f"writer {number} #{index}", "author_type": "customer"},
                headers={"Prefer": "return=minimal"},
            )
            statuses.append(response.status_code)

    await asyncio.gather(*(writer(number) for number in range(WRITERS)))

    assert statuses == [201] * (WRITERS * MESSAGES_PER_WRITER)
    assert await seqs_of(client, session["id"]) == list(range(1, WRITERS * 250 + 2))


async def test_each_writer_sees_its_messages_in_its_own_order(client: TestClientProtocol) -> None:
    session = await create_session(client)

    async def writer(number: int) -> list[int]:
        return [
            (await post_message(client, session["id"], f"w{number}-{i}", minimal=True))["seq"]
            for i in range(20)
        ]

    per_writer = await asyncio.gather(*(writer(number) for number in range(4)))

    for seqs in per_writer:
        assert seqs == sorted(seqs)


async def test_cancelled_requests_never_wedge_the_database(client: TestClientProtocol) -> None:
    session = await create_session(client)
    path = f"/sessions/{session['id']}/messages"

    for delay in [0, 0.0005, 0.001, 0.002, 0.005, 0.01] * 4:
        tasks = [
            asyncio.create_task(
                client.post(path, json={"content": "gone", "author_type": "customer"})
            )
            for _ in range(3)
        ]
        await asyncio.sleep(delay)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    started = time.monotonic()
    after = await post_message(client, session["id"], "still here", minimal=True)
    elapsed = time.monotonic() - started

    assert elapsed < 1.0, f"the next write waited {elapsed:.2f}s for a lock"
    # A cancelled request may still have been stored, but never half-way: seqs stay gapless.
    seqs = await seqs_of(client, session["id"])
    assert seqs == list(range(1, len(seqs) + 1))
    assert after["seq"] in seqs


async def test_concurrent_posts_to_many_sessions_fail_and_succeed_one_by_one(
    client: TestClientProtocol,
) -> None:
    """Posts that arrive together share a transaction; a missing session fails alone."""
    sessions = [await create_session(client) for _ in range(3)]
    missing = "00000000-0000-7000-8000-000000000000"
    targets = [session["id"] for session in sessions] * 10 + [missing] * 10

    async def post(index: int, session_id: str) -> tuple[str, int, dict[str, object]]:
        response = await client.post(
            f"/sessions/{session_id}/messages",
            json={"content": f"message {index}", "author_type": "customer"},
            headers={"Prefer": "return=minimal"},
        )
        return session_id, response.status_code, await response.get_json()

    results = await asyncio.gather(*(post(i, target) for i, target in enumerate(targets)))

    assert sorted(status for target, status, _ in results if target == missing) == [404] * 10
    for session in sessions:
        answered = [body for target, status, body in results if target == session["id"]]
        assert all(body["seq"] for body in answered)
        assert sorted(body["seq"] for body in answered) == list(range(2, 12))
        page = await (await client.get(f"/sessions/{session['id']}/messages")).get_json()
        stored = {item["seq"]: item["content"] for item in page["items"]}
        assert {body["seq"]: body["content"] for body in answered} == {
            seq: content for seq, content in stored.items() if seq > 1
        }
