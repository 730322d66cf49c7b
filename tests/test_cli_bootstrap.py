"""Bootstrapping a deployment with the real ``chat-service`` command, then using what it printed.

``migrate``, ``create-tenant`` and ``create-admin`` run as subprocesses of the installed entry
point on a fresh database (SQLite file, then a scratch PostgreSQL database); the admin's API key
they print is then used against the application, in production mode, on that database.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chat_service.app import create_app
from tests.support import ROOT, load_test_settings, postgres_admin_url, scratch_database, sqlite_url

CHAT_SERVICE = Path(sys.executable).parent / "chat-service"
CURSOR_SECRET = "cli-test-cursor-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Where the subprocesses may cache bytecode when the environment forbids writing it
    next to the sources (PYTHONDONTWRITEBYTECODE): each call would compile everything again."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return {}
    return {"PYTHONPYCACHEPREFIX": str(tmp_path_factory.mktemp("pycache"))}


@dataclass(frozen=True)
class Cli:
    """The command, configured for one database."""

    database_url: str
    config_file: Path
    extra_environment: dict[str, str]

    def __call__(self, *args: str) -> Result:
        """``chat-service --config <file> <args>``."""
        [result] = self.together(args)
        return result

    def together(self, *commands: Sequence[str]) -> list[Result]:
        """Run ``commands`` at the same time (they must not depend on each other), from the
        repository root and without the test's ``CHAT_SERVICE_*`` variables."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("CHAT_SERVICE_") and name != "PYTHONDONTWRITEBYTECODE"
        }
        processes = [
            subprocess.Popen(
                [str(CHAT_SERVICE), "--config", str(self.config_file), *args],
                cwd=ROOT,
                env={**environment, **self.extra_environment},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        results = []
        try:
            for process in processes:
                stdout, stderr = process.communicate(timeout=60)
                results.append(Result(process.returncode, stdout, stderr))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        return results


@dataclass(frozen=True)
class Result:
    """How a command ended."""

    returncode: int
    stdout: str
    stderr: str


def cli_for(database_url: str, tmp_path: Path, bytecode_cache: dict[str, str]) -> Cli:
    config_file = tmp_path / "settings.toml"
    config_file.write_text(f'[chat-service.database]\nurl = "{database_url}"\n')
    return Cli(database_url, config_file, bytecode_cache)


@pytest.fixture
def sqlite_cli(tmp_path: Path, bytecode_cache: dict[str, str]) -> Cli:
    """The command on a SQLite file that does not exist yet."""
    return cli_for(sqlite_url(tmp_path / "x.sqlite3"), tmp_path, bytecode_cache)


@pytest.fixture
def postgresql_cli(tmp_path: Path, bytecode_cache: dict[str, str]) -> Iterator[Cli]:
    """The command on an empty scratch PostgreSQL database."""
    with scratch_database(postgres_admin_url()) as url:
        yield cli_for(url, tmp_path, bytecode_cache)


async def get_agents(database_url: str, *headers: dict[str, str]) -> list[tuple[int, Any]]:
    """``GET /agents`` with each of ``headers`` on the bootstrapped database, in production
    mode (authentication required)."""
    app = create_app(
        load_test_settings(
            database={"url": database_url},
            auth={"required": True},
            security={"cursor_secret": CURSOR_SECRET},
        )
    )
    answers = []
    async with app.test_app():
        client = app.test_client()
        for each in headers:
            response = await client.get("/agents", headers=each)
            answers.append((response.status_code, await response.get_json(force=True)))
    return answers


def migrate_and_create_tenant(cli: Cli) -> None:
    migrated = cli("migrate")
    assert migrated.returncode == 0, migrated.stderr

    created = cli("create-tenant", "acme")
    assert created.returncode == 0, created.stderr
    tenant = json.loads(created.stdout)
    assert tenant == {"id": tenant["id"], "slug": "acme", "name": "acme"}
    uuid.UUID(tenant["id"])


def assert_tenant_exists(again: Result) -> None:
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == "chat-service: a tenant with slug 'acme' exists\n"


def assert_admin_created(admin: Result) -> dict[str, Any]:
    assert admin.returncode == 0, admin.stderr
    printed: dict[str, Any] = json.loads(admin.stdout)
    assert set(printed) == {"tenant", "agent_id", "api_key", "note"}
    assert printed["tenant"] == "acme"
    assert printed["api_key"].startswith("csk_")
    uuid.UUID(printed["agent_id"])
    return printed


def assert_the_key_lists_ada(cli: Cli, printed: dict[str, Any]) -> None:
    (status, body), (anonymous_status, anonymous_body) = asyncio.run(
        get_agents(cli.database_url, {"Authorization": f"Bearer {printed['api_key']}"}, {})
    )

    assert status == 200, body
    assert [
        (agent["id"], agent["name"], agent["role"], agent["email"], agent["active"])
        for agent in body["items"]
    ] == [(printed["agent_id"], "Ada", "admin", "ada@acme.test", True)]
    # Without the key, the same request is refused.
    assert anonymous_status == 401
    assert anonymous_body["detail"] == "this request needs a credential: Authorization: Bearer ..."


ADMIN_ADA = ("create-admin", "acme", "--name", "Ada", "--email", "ada@acme.test")
TENANT_AGAIN = ("create-tenant", "acme", "--name", "ACME again")


def test_bootstrap_on_sqlite(sqlite_cli: Cli) -> None:
    migrate_and_create_tenant(sqlite_cli)

    again, admin, missing = sqlite_cli.together(
        TENANT_AGAIN, ADMIN_ADA, ("create-admin", "nope", "--name", "x")
    )

    assert_tenant_exists(again)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr == "chat-service: no tenant with slug 'nope'\n"
    assert_the_key_lists_ada(sqlite_cli, assert_admin_created(admin))


def test_bootstrap_on_postgresql(postgresql_cli: Cli) -> None:
    migrate_and_create_tenant(postgresql_cli)

    again, admin = postgresql_cli.together(TENANT_AGAIN, ADMIN_ADA)

    assert_tenant_exists(again)
    assert_the_key_lists_ada(postgresql_cli, assert_admin_created(admin))
