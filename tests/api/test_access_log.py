"""The access log: one line per request with the route template as a field of its own.

The JSON output on the real server, request ids and what never appears are in
tests/test_logs.py.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from quart.typing import TestClientProtocol

from chat_service.logs import ACCESS_LOGGER
from tests.factories import create_session
from tests.metrics_support import MESSAGES_ROUTE


def access_lines(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [record for record in caplog.records if record.name == ACCESS_LOGGER]


async def test_each_request_gets_one_access_line_with_its_route(
    client: TestClientProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    session = await create_session(client)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    caplog.clear()
    path = f"/sessions/{session['id']}/messages"
    posted = await client.post(
        f"{path}?q=private", json={"content": "hi", "author_type": "customer"}
    )
    missing = await client.get(f"/nothing/here/{uuid.uuid4()}")

    assert (posted.status_code, missing.status_code) == (201, 404)
    first, second = access_lines(caplog)
    assert (first.route, first.method, first.path, first.status) == (
        MESSAGES_ROUTE,
        "POST",
        path,
        201,
    )
    assert first.duration_ms >= 0
    assert first.getMessage().startswith(f"POST {path} 201 ")
    assert (second.route, second.status) == ("unmatched", 404)
    assert "private" not in caplog.text  # the query string is never logged


@pytest.mark.parametrize("settings_overrides", [{"log": {"access_log": False}}], ids=["off"])
async def test_the_access_log_can_be_switched_off(
    client: TestClientProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    await create_session(client)

    assert access_lines(caplog) == []
