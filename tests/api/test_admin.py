"""What admins manage: agents and API keys, listed a page at a time."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol

from tests.api.access_world import AUTH_REQUIRED, World, build_world
from tests.factories import problem_of


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return AUTH_REQUIRED


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/agents", {"name": "Agent"}),
        ("/api-keys", {"name": "key", "scopes": ["sessions:read"]}),
    ],
)
async def test_lists_page_through_every_item_once_in_creation_order(
    app: Any, client: TestClientProtocol, path: str, body: dict[str, Any]
) -> None:
    world: World = await build_world(app, client)
    admin = world.headers["admin"]
    created = []
    for index in range(5):
        response = await client.post(path, json={**body, "name": f"n{index}"}, headers=admin)
        assert response.status_code == 201
        created.append((await response.get_json())["id"])

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&after={cursor}" if cursor else "")
        page = await (await client.get(path + query, headers=admin)).get_json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids))
    assert ids[-5:] == created  # oldest first, the new ones last
    assert all("key" not in item for item in seen)  # a key is shown once, at creation
    inbox_cursor = (await (await client.get("/sessions?limit=1", headers=admin)).get_json())[
        "next_cursor"
    ]
    await problem_of(await client.get(f"{path}?after={inbox_cursor}", headers=admin), 400)
    await problem_of(await client.get(f"{path}?limit=0", headers=admin), 422)
