"""HTTP routes: parse and validate, call one service function, shape the answer."""

from __future__ import annotations

from quart import Quart

from chat_service.routes import (
    access,
    admin,
    health,
    hooks,
    idempotency,
    live,
    live_sinks,
    messages,
    metrics,
    problems,
    rate_limits,
    sessions,
)
from chat_service.routes.state import app_state


def register(app: Quart) -> None:
    """Attach the hooks, error handlers and blueprints to ``app``."""
    # First: it times the whole request and logs the final response.
    access.register(app, log_access=app_state(app).settings.log.access_log)
    hooks.register(app)
    metrics.register(app)
    problems.register(app)
    rate_limits.register(app)
    for module in (health, sessions, messages, live, admin, metrics):
        app.register_blueprint(module.blueprint)
    idempotency.register(app)
    live_sinks.register(app)
