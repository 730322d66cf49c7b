"""Settings: TOML defaults, environment overrides, secrets that never show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_service import cli, config
from tests.support import ROOT


def load_shipped() -> config.Settings:
    return config.load([ROOT / config.DEFAULT_CONFIG_FILE])


def test_shipped_defaults_run_locally_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("CHAT_SERVICE_")]:
        monkeypatch.delenv(name)

    settings = load_shipped()

    assert settings.database.url.get_secret_value().startswith("sqlite+aiosqlite:///data/")
    assert settings.http.bind == "127.0.0.1:8080"
    assert settings.limits.message_chars == 10_000
    assert (settings.limits.page_size_default, settings.limits.page_size_max) == (50, 200)
    assert settings.limits.session_inline_messages == 1000
    assert settings.http.max_body_bytes == 64 * 1024
    assert settings.sessions.default_message == "Hello, how may I help you?"


def test_environment_overrides_each_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SERVICE_DATABASE_URL", "postgresql+asyncpg://u:pw@db/chat")
    monkeypatch.setenv("CHAT_SERVICE_HTTP_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("CHAT_SERVICE_HTTP_WORKERS", "4")
    monkeypatch.setenv("CHAT_SERVICE_LIMITS_MESSAGE_CHARS", "500")
    monkeypatch.setenv("CHAT_SERVICE_LOG_FORMAT", "json")

    settings = load_shipped()

    assert settings.database.url.get_secret_value() == "postgresql+asyncpg://u:pw@db/chat"
    assert settings.http.bind == "0.0.0.0:9000"
    assert settings.http.workers == 4
    assert settings.limits.message_chars == 500
    assert settings.log.format == "json"


def test_settings_files_from_the_environment_override_the_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[chat-service.security]\ncursor_secret = "from-a-mounted-file"\n')
    monkeypatch.setenv("CHAT_SERVICE_SETTINGS", str(secrets))

    settings = load_shipped()

    assert settings.security.cursor_secret.get_secret_value() == "from-a-mounted-file"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHAT_SERVICE_HTTP_WORKERS", "0"),
        ("CHAT_SERVICE_LIMITS_PAGE_SIZE_DEFAULT", "500"),
        ("CHAT_SERVICE_LOG_LEVEL", "verbose"),
        ("CHAT_SERVICE_DATABASE_URL", "mysql://db/chat"),
        ("CHAT_SERVICE_DATABASE_URL", "not a url"),
        ("CHAT_SERVICE_DATABASE_URL", "sqlite+aiosqlite://"),
        ("CHAT_SERVICE_DATABASE_URL", "sqlite+aiosqlite:///:memory:"),
        ("CHAT_SERVICE_DATABASE_POOL_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_invalid_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(config.SettingsError, match=r"workers|page_size|literals|url|timeout"):
        load_shipped()


def test_show_config_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CHAT_SERVICE_DATABASE_URL", "postgresql+asyncpg://u:hunter2@db/chat")
    monkeypatch.setenv("CHAT_SERVICE_SECURITY_CURSOR_SECRET", "sekrit-cursor-key")

    assert cli.main(["show-config"]) == 0

    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["database"]["url"] == "***"
    assert shown["security"]["cursor_secret"] == "***"
    assert "hunter2" not in out
    assert "sekrit" not in out
    assert repr(load_shipped()).count("hunter2") == 0


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("CHAT_SERVICE_METRICS_BIND", "9100", "metrics.bind must read like"),
        ("CHAT_SERVICE_METRICS_BIND", "127.0.0.1:", "metrics.bind must read like"),
        ("CHAT_SERVICE_METRICS_BIND", "127.0.0.1:70000", "metrics.bind must read like"),
        ("CHAT_SERVICE_METRICS_BIND", "127.0.0.1:8080", "must differ from http.bind"),
    ],
)
def test_a_metrics_bind_must_be_another_host_and_port(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(config.SettingsError, match=complaint):
        load_shipped()


def test_metrics_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CHAT_SERVICE_METRICS_BIND", "[::1]:9100")
    monkeypatch.setenv("CHAT_SERVICE_METRICS_TOKEN", "scrape-me-if-you-can")

    settings = load_shipped()
    assert cli.main(["show-config"]) == 0

    assert settings.metrics.listener == ("::1", 9100)
    assert settings.metrics.token.get_secret_value() == "scrape-me-if-you-can"
    shown = capsys.readouterr().out
    assert json.loads(shown)["metrics"] == {"enabled": True, "token": "***", "bind": "[::1]:9100"}
    assert "scrape-me" not in shown
