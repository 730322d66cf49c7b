"""The real service with one more route, whose handler fails: an unhandled error (500).

Run as ``python -m tests.failing_app`` from the repository root, configured like
``chat-service serve`` (config/config.toml and ``CHAT_SERVICE_*`` variables). The
route breaks a database constraint with the posted text as a statement parameter, so
tests can check that the error is logged once, with its traceback, and without the
parameter.
"""

from __future__ import annotations

import sys
from typing import Any

from quart import Quart, request
from sqlalchemy import Connection, text

from chat_service import config, logs, server
from chat_service.app import create_app
from chat_service.routes.state import app_state

FAILING_PATH = "/test/fail"


def create_failing_app(settings: config.Settings) -> Quart:
    """``create_app`` plus ``POST /test/fail``, which answers 500."""
    app = create_app(settings)

    @app.post(FAILING_PATH)
    async def fail() -> Any:
        posted = await request.get_data(as_text=True)

        def write(connection: Connection) -> None:
            # A tenant without a name: NOT NULL fails on both databases.
            connection.execute(text("INSERT INTO tenants (slug) VALUES (:slug)"), {"slug": posted})

        await app_state(app).db.run(write, write=True)
        return {}

    return app


def main() -> int:
    settings = config.load()
    logs.configure(settings.log)
    return server.run(settings, app_factory=create_failing_app)


if __name__ == "__main__":
    sys.exit(main())
