"""The container wiring: docker-compose.yml and the Dockerfile agree with the service.

No Docker engine is needed: the files are read and checked as text and YAML.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from sqlalchemy import make_url

from chat_service.config import DEFAULT_CONFIG_FILE, Settings, SettingsError, load

ROOT = Path(__file__).resolve().parent.parent
# ${NAME}, ${NAME:-default} or ${NAME-default}, as Compose interpolates them.
COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")
SERVICE_VARIABLE = re.compile(r"\bCHAT_SERVICE_[A-Z0-9_]+\b")
# The one CHAT_SERVICE_ variable that is not a setting: typed-settings' list of files.
SETTINGS_FILES_VARIABLE = "CHAT_SERVICE_SETTINGS"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each a list of (INSTRUCTION, arguments)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    result: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        instruction, _, arguments = line.strip().partition(" ")
        if not instruction or instruction.startswith("#"):
            continue
        if instruction.upper() == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction.upper(), arguments.strip()))
    return result


def setting_variables() -> set[str]:
    """CHAT_SERVICE_<SECTION>_<KEY> for every setting the service has."""
    defaults = Settings()
    return {
        f"CHAT_SERVICE_{section.name.upper()}_{field.name.upper()}"
        for section in attrs.fields(Settings)
        for field in attrs.fields(type(getattr(defaults, section.name)))
    }


def interpolate(value: str) -> str:
    """``value`` as Compose sees it when none of its variables is set."""
    return COMPOSE_VARIABLE.sub(lambda match: match["default"] or "", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: str(value) for name, value in env.items()}


def arguments(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


def test_database_reports_its_health(compose: dict[str, Any]) -> None:
    test = compose["services"]["db"]["healthcheck"]["test"]

    assert "pg_isready" in " ".join(test)


def test_migrate_runs_once_the_database_is_healthy(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]

    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["command"] == ["chat-service", "migrate"]
    assert migrate["restart"] == "no"


def test_app_serves_after_a_successful_migration(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]

    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert app["command"] == ["chat-service", "serve"]
    assert "8080:8080" in [str(port) for port in app["ports"]]


def test_migrate_and_app_use_the_same_postgresql_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    url = environment(services["app"])["CHAT_SERVICE_DATABASE_URL"]

    assert environment(services["migrate"])["CHAT_SERVICE_DATABASE_URL"] == url
    parsed = make_url(interpolate(url))
    db = {name: interpolate(value) for name, value in environment(services["db"]).items()}
    assert parsed.drivername == "postgresql+asyncpg"
    assert parsed.host == "db"
    assert parsed.username == db["POSTGRES_USER"]
    assert parsed.password == db["POSTGRES_PASSWORD"]
    assert parsed.database == db["POSTGRES_DB"]


def test_every_service_variable_names_a_setting() -> None:
    valid = setting_variables() | {SETTINGS_FILES_VARIABLE}
    used: set[str] = set()
    for name in ("docker-compose.yml", "Dockerfile"):
        used |= set(SERVICE_VARIABLE.findall((ROOT / name).read_text()))

    assert {"CHAT_SERVICE_DATABASE_URL", "CHAT_SERVICE_LIMITS_MESSAGE_CHARS"} <= valid
    assert "CHAT_SERVICE_DATABASE_URL" in used
    assert used - valid == set()


def test_both_stages_share_one_slim_python(stages: list[list[tuple[str, str]]]) -> None:
    # The virtualenv copied into the final stage links to the build stage's interpreter.
    images = {args.split()[0] for stage in stages for args in arguments(stage, "FROM")}

    assert len(stages) >= 2
    assert images == {"python:3.11-slim"}


def test_dependencies_come_from_the_lock_file(stages: list[list[tuple[str, str]]]) -> None:
    build = [args for stage in stages[:-1] for _, args in stage]
    makefile = (ROOT / "Makefile").read_text()
    poetry_version = re.search(r"^POETRY_VERSION := (\S+)$", makefile, re.MULTILINE)

    assert poetry_version is not None
    assert f"POETRY_VERSION={poetry_version[1]}" in build
    assert any("poetry.lock" in args.split() for args in build)
    assert any("poetry install --only main --no-root" in args for args in build)
    assert any("poetry install --only-root" in args for args in build)


def test_image_runs_as_a_non_root_user(stages: list[list[tuple[str, str]]]) -> None:
    users = arguments(stages[-1], "USER")

    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_image_serves_on_one_port_and_checks_its_health(
    stages: list[list[tuple[str, str]]],
) -> None:
    final = stages[-1]
    (healthcheck,) = arguments(final, "HEALTHCHECK")

    assert arguments(final, "EXPOSE") == ["8080"]
    assert "CHAT_SERVICE_HTTP_BIND=0.0.0.0:8080" in " ".join(arguments(final, "ENV"))
    assert "http://127.0.0.1:8080/health" in healthcheck
    assert "curl" not in healthcheck
    assert json.loads(arguments(final, "CMD")[-1]) == ["chat-service", "serve"]


def test_image_ships_what_migrate_and_serve_read(stages: list[list[tuple[str, str]]]) -> None:
    final = stages[-1]
    copied = {source for args in arguments(final, "COPY") for source in args.split()[:-1]}

    # Settings, alembic.ini and the SQLite default are found relative to the working directory.
    assert arguments(final, "WORKDIR") == ["/app"]
    assert {"/app/.venv", "chat_service/", "config/", "migrations/", "alembic.ini"} <= copied


def test_every_runtime_import_is_a_main_dependency() -> None:
    """The image installs only the main group: nothing under chat_service/ may need dev tools."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    main = {
        normal(re.split(r"[\s(\[;<>=!~]", spec, maxsplit=1)[0]) for spec in project["dependencies"]
    }
    distributions = packages_distributions()
    needed = set()
    for path in (ROOT / "chat_service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "chat_service" and top not in sys.stdlib_module_names:
                    needed.update(normal(d) for d in distributions.get(top, [top]))
    # Installed as part of a main dependency (quart brings werkzeug, pydantic its core).
    transitive = {"werkzeug", "pydantic-core", "greenlet"}
    assert needed - transitive <= main, needed - transitive - main


def test_compose_runs_in_production_mode_with_a_required_secret(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both containers require authentication, and refuse to start without a real secret."""
    for name in ("migrate", "app"):
        env = environment(compose["services"][name])
        assert env["CHAT_SERVICE_AUTH_REQUIRED"] == "true"
        # ${VAR:?message}: Compose itself stops when the secret is not set.
        assert re.fullmatch(
            r"\$\{CHAT_SERVICE_SECURITY_CURSOR_SECRET:\?[^}]+\}",
            env["CHAT_SERVICE_SECURITY_CURSOR_SECRET"],
        )
    env = environment(compose["services"]["app"])
    monkeypatch.setenv("CHAT_SERVICE_AUTH_REQUIRED", env["CHAT_SERVICE_AUTH_REQUIRED"])
    monkeypatch.setenv("CHAT_SERVICE_DATABASE_URL", interpolate(env["CHAT_SERVICE_DATABASE_URL"]))
    for weak in ("", "changeme", "short-secret"):
        monkeypatch.setenv("CHAT_SERVICE_SECURITY_CURSOR_SECRET", weak)
        with pytest.raises(SettingsError, match=r"security\.cursor_secret"):
            load([ROOT / DEFAULT_CONFIG_FILE])
    monkeypatch.setenv("CHAT_SERVICE_SECURITY_CURSOR_SECRET", "0123456789abcdef" * 4)
    assert load([ROOT / DEFAULT_CONFIG_FILE]).auth.required is True
