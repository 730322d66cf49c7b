"""Framework errors are problems too, and a 500 never shows exception text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from chat_service.app import create_app
from tests.factories import problem_of
from tests.support import load_test_settings


@pytest.fixture
async def failing_app(database_url: str) -> AsyncIterator[Quart]:
    app = create_app(load_test_settings(database={"url": database_url}))

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret internals: password=hunter2")

    async with app.test_app():
        yield app


async def test_unhandled_error_is_a_500_problem_without_details(failing_app: Quart) -> None:
    response = await failing_app.test_client().get("/boom", headers={"X-Request-ID": "r-1"})

    body = await problem_of(response, 500)
    assert "hunter2" not in await response.get_data(as_text=True)
    assert "RuntimeError" not in body["detail"]
    assert response.headers["X-Request-ID"] == "r-1"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_every_answer_carries_nosniff_and_a_request_id(
    client: TestClientProtocol,
) -> None:
    for path in ["/health", "/sessions/nope", "/openapi.json"]:
        response = await client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("offered", "kept"),
    [("abc-123_x.y", True), ("a" * 128, True), ("a" * 129, False), ("has space", False)],
)
async def test_request_id_is_taken_only_when_well_formed(
    client: TestClientProtocol, offered: str, kept: bool
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": offered})

    assert (response.headers["X-Request-ID"] == offered) is kept
