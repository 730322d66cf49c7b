"""HTTP routes: parse and validate, call one service function, shape the answer."""

from __future__ import annotations

from quart import Quart

from chat_service.routes import (
    admin,
    health,
    hooks,
    live,
    messages,
    problems,
    rate_limits,
    sessions,
)


def register(app: Quart) -> None:
    """Attach the hooks, error handlers and blueprints to ``app``."""
    hooks.register(app)
    problems.register(app)
    rate_limits.register(app)
    for module in (health, sessions, messages, live, admin):
        app.register_blueprint(module.blueprint)
