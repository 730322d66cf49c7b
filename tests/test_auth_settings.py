"""Settings refuse production mode and HS256 without real secrets, and name what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from chat_service.config import (
    DEFAULT_CONFIG_FILE,
    Settings,
    SettingsError,
    load_without_environment,
)
from tests.support import ROOT

GOOD_SECRET = "k3V9-q2Lx8Rw1Zt6Yb4Nf0Hc7Md5Sa2Pe"  # 34 characters
WEAK = {
    "empty": ("", "must be set"),
    "31 characters": ("x" * 31, "looks like a placeholder"),
    "changeme": ("changeme", "looks like a placeholder"),
    "CHANGEME": ("CHANGEME", "looks like a placeholder"),
    "secret": ("secret", "looks like a placeholder"),
}


def load(**sections: dict[str, Any]) -> Settings:
    return load_without_environment([ROOT / DEFAULT_CONFIG_FILE], overrides=sections)


@pytest.mark.parametrize(("secret", "complaint"), list(WEAK.values()), ids=list(WEAK))
def test_required_auth_refuses_a_weak_cursor_secret(secret: str, complaint: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(auth={"required": True}, security={"cursor_secret": secret})

    message = str(raised.value)
    assert "security.cursor_secret" in message
    assert complaint in message
    if secret:
        assert secret not in message.replace("security.cursor_secret", "")


def test_required_auth_without_any_cursor_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"security\.cursor_secret must be set"):
        load(auth={"required": True})


@pytest.mark.parametrize("secret", [GOOD_SECRET, "y" * 32])
def test_required_auth_accepts_a_real_cursor_secret(secret: str) -> None:
    settings = load(auth={"required": True}, security={"cursor_secret": secret})

    assert settings.auth.required is True
    assert settings.security.cursor_secret.get_secret_value() == secret


def test_weak_cursor_secrets_are_fine_while_auth_is_not_required() -> None:
    """Local mode: an empty key means a random one per process."""
    for secret, _ in WEAK.values():
        settings = load(auth={"required": False}, security={"cursor_secret": secret})
        assert settings.auth.required is False


@pytest.mark.parametrize("required", [False, True])
@pytest.mark.parametrize(("secret", "complaint"), list(WEAK.values()), ids=list(WEAK))
def test_hs256_refuses_a_weak_jwt_secret(secret: str, complaint: str, required: bool) -> None:
    with pytest.raises(SettingsError) as raised:
        load(
            auth={"required": required, "jwt_algorithms": ["HS256"], "jwt_secret": secret},
            security={"cursor_secret": GOOD_SECRET},
        )

    message = str(raised.value)
    assert "auth.jwt_secret" in message
    assert complaint in message
    assert "cursor_secret" not in message


def test_hs256_accepts_a_real_jwt_secret() -> None:
    settings = load(
        auth={"required": True, "jwt_algorithms": ["HS256"], "jwt_secret": GOOD_SECRET},
        security={"cursor_secret": "z" * 40},
    )

    assert settings.auth.jwt_algorithms == ("HS256",)
    assert settings.auth.jwt_secret.get_secret_value() == GOOD_SECRET


def test_a_weak_jwt_secret_is_fine_without_hs256() -> None:
    settings = load(
        auth={
            "jwt_algorithms": ["RS256"],
            "jwt_secret": "changeme",
            "jwt_jwks_url": "https://idp.example/.well-known/jwks.json",
            "jwt_audience": "chat-service",
        }
    )

    assert settings.auth.jwt_algorithms == ("RS256",)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_jwks_algorithms_need_an_audience(algorithm: str) -> None:
    """A shared identity provider's tokens for other applications must not be accepted."""
    jwks = "https://idp.example/.well-known/jwks.json"
    with pytest.raises(SettingsError, match=r"auth\.jwt_audience is required"):
        load(auth={"jwt_algorithms": [algorithm], "jwt_jwks_url": jwks})


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_jwks_algorithms_need_a_jwks_url(algorithm: str) -> None:
    with pytest.raises(SettingsError, match=r"auth\.jwt_jwks_url is required for RS256 and ES256"):
        load(auth={"jwt_algorithms": [algorithm]})


def test_an_unknown_jwt_algorithm_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"auth\.jwt_algorithms: HS512, none not supported"):
        load(auth={"jwt_algorithms": ["HS512", "none"]})
