"""JSON logs of the real server: one access line per request, errors once, no secrets.

The server runs as a subprocess with ``log.format = "json"`` at DEBUG, with secrets in
its settings, serving the real application plus one route that fails
(tests/failing_app.py). Every line it writes must be JSON.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url
from websockets.sync.client import connect

from chat_service.logs import ACCESS_LOGGER
from tests.failing_app import FAILING_PATH
from tests.metrics_support import MESSAGES_ROUTE
from tests.server_process import free_port, run_cli, service_env, serving

pytestmark = pytest.mark.slow

SECRETS = {
    "message text": f"my card number is {uuid.uuid4()}",
    "failing text": f"private words {uuid.uuid4()}",
    "database password": f"db-password-{uuid.uuid4().hex}",
    "jwt secret": f"jwt-secret-{uuid.uuid4().hex}",
    "cursor secret": f"cursor-secret-{uuid.uuid4().hex}",
    "metrics token": f"metrics-token-{uuid.uuid4().hex}",
    "redis password": f"redis-password-{uuid.uuid4().hex}",
    "query text": f"query-text-{uuid.uuid4().hex}",
    "unknown token": f"cst_{uuid.uuid4().hex}{uuid.uuid4().hex}",
}
SESSION_ROUTE = "/sessions/<uuid:session_id>"
WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Request ids a client may not choose: each request gets one of its own instead.
BAD_IDS = ["has spaces in it", "x" * 200, "semi;colon"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def server_env(database_url: str, port: int) -> dict[str, str]:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":  # trust authentication ignores the password
        url = url.set(password=SECRETS["database password"])
    return service_env(
        DATABASE_URL=url.render_as_string(hide_password=False),
        HTTP_BIND=f"127.0.0.1:{port}",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        SECURITY_CURSOR_SECRET=SECRETS["cursor secret"],
        AUTH_JWT_ALGORITHMS="HS256",
        AUTH_JWT_SECRET=SECRETS["jwt secret"],
        METRICS_TOKEN=SECRETS["metrics token"],
        RATE_LIMITS_REDIS_URL=f"redis://:{SECRETS['redis password']}@127.0.0.1:6379/0",
    )


class Caller:
    """Sends requests, each with a request id of its own, and notes what each expects."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.expected: dict[str, tuple[str, str, int]] = {}
        self.last = ""

    def __call__(self, method: str, path: str, route: str, status: int, **kwargs: Any) -> Any:
        request_id = f"rid-{len(self.expected)}"
        headers = {"X-Request-ID": request_id, **kwargs.pop("headers", {})}
        response = self.client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == status, response.text
        self.expected[request_id] = (route, method, status)
        self.last = request_id
        return response


def test_json_logs_have_one_access_line_per_request_errors_once_and_no_secrets(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(database_url, port)
    admin = run_cli("create-admin", "default", "--name", "Ops", env=env)
    assert admin.returncode == 0, admin.stderr
    api_key = json.loads(admin.stdout)["api_key"]
    command = (sys.executable, "-m", "tests.failing_app")
    with serving(env, tmp_path / "server.log", port=port, command=command) as server:
        with server.client() as client:
            call = Caller(client)
            opened = call("POST", "/sessions", "/sessions", 201).json()
            session_id, token = opened["id"], opened["customer_token"]
            message = {"content": SECRETS["message text"]}
            path = f"/sessions/{session_id}/messages"
            call("POST", path, MESSAGES_ROUTE, 201, json=message, headers=bearer(token))
            call("GET", f"/sessions/{session_id}", SESSION_ROUTE, 200, headers=bearer(api_key))
            call("GET", "/sessions", "/sessions", 401, headers=bearer(SECRETS["unknown token"]))
            tickets = [
                call("POST", "/live/tickets", "/live/tickets", 201, headers=bearer(token)).json()
                for _ in range(2)
            ]
            events = f"/sessions/{session_id}/events?ticket={tickets[0]['ticket']}"
            with client.stream("GET", events, headers={"X-Request-ID": "rid-sse"}) as stream:
                assert stream.status_code == 200
                assert next(stream.iter_lines()).startswith("retry:")
            call.expected["rid-sse"] = (f"{SESSION_ROUTE}/events", "GET", 200)
            live = f"ws://127.0.0.1:{port}/sessions/{session_id}/live?ticket="
            with connect(
                live + tickets[1]["ticket"], additional_headers={"X-Request-ID": "rid-ws"}
            ):
                pass
            call.expected["rid-ws"] = (f"{SESSION_ROUTE}/live", "GET", 101)
            call("GET", "/metrics", "/metrics", 200, headers=bearer(SECRETS["metrics token"]))
            call("GET", f"/nowhere?q={SECRETS['query text']}", "unmatched", 404)
            call("POST", FAILING_PATH, FAILING_PATH, 500, content=SECRETS["failing text"])
            failing_id = call.last
            replaced = [client.get("/health", headers={"X-Request-ID": b}) for b in BAD_IDS]
        assert server.stop() == 0
        logs = server.logs()

    records = [json.loads(line) for line in logs.splitlines()]  # every line is JSON
    access = [record for record in records if record["name"] == ACCESS_LOGGER]
    assert not [record for record in records if record["name"] == "hypercorn.access"]
    for request_id, (route, method, status) in call.expected.items():
        lines = [record for record in access if record["request_id"] == request_id]
        assert len(lines) == 1, (request_id, lines)
        (line,) = lines
        assert (line["route"], line["method"], line["status"]) == (route, method, status)
        assert line["level"] == "INFO"
        assert isinstance(line["duration_ms"], float)
        assert line["path"].startswith("/")
        assert "?" not in line["path"]
    for sent, response in zip(BAD_IDS, replaced, strict=True):
        assert response.headers["X-Request-ID"] != sent
        assert WELL_FORMED_ID.fullmatch(response.headers["X-Request-ID"])
        assert sent not in logs
        (line,) = [r for r in access if r["request_id"] == response.headers["X-Request-ID"]]
        assert line["route"] == "/health"
    # Beside them only the start-up probe's GET /health: no other access line.
    assert len(access) == len(call.expected) + len(BAD_IDS) + 1
    errors = [record for record in records if "exc_info" in record]
    assert len(errors) == 1, errors
    (error,) = errors
    assert (error["level"], error["request_id"]) == ("ERROR", failing_id)
    assert error["exc_info"].startswith("Traceback (most recent call last)")
    assert "IntegrityError" in error["exc_info"]
    assert sum("Traceback" in line for line in logs.splitlines()) == 1
    found = {name for name, secret in SECRETS.items() if secret in logs}
    for credential in (token, api_key, *(ticket["ticket"] for ticket in tickets)):
        if credential in logs:
            found.add(credential[:8])
    assert not found
