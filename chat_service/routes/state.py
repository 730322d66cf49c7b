"""What the routes need at hand: settings, database, codecs, verifier, hub, limits, keys."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart, current_app

from chat_service.config import Settings
from chat_service.model import Database
from chat_service.services.cursors import CursorCodec
from chat_service.services.idempotency import Idempotency
from chat_service.services.jwt_tokens import JwtVerifier
from chat_service.services.live import LiveHub
from chat_service.services.rate_limits import RateLimiter

EXTENSION_KEY = "chat_service"


@dataclass(frozen=True, slots=True)
class AppState:
    """Objects built once per application and shared by every request."""

    settings: Settings
    db: Database
    cursors: CursorCodec
    jwt: JwtVerifier
    live: LiveHub
    rate_limits: RateLimiter | None  # None: no limits
    idempotency: Idempotency


def app_state(app: Quart | None = None) -> AppState:
    """The state of ``app`` (the current application when not given)."""
    state: AppState = (app or current_app).extensions[EXTENSION_KEY]
    return state
