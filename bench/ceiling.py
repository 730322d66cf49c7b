"""The ceiling: the smallest Quart app, served exactly as the service is served.

It goes through ``chat_service.server.run`` with the same settings (bind, workers,
keep-alive, access log, event loop), so the ratio service/ceiling measures what the
service adds on top of Quart and Hypercorn. Run as
``python -m bench.ceiling`` with the usual ``CHAT_SERVICE_*`` variables.
"""

from __future__ import annotations

from quart import Quart

from chat_service import logs, server
from chat_service.config import DEFAULT_CONFIG_FILE, Settings, load


def create_app(settings: Settings) -> Quart:
    app = Quart("ceiling")

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> int:
    settings = load([DEFAULT_CONFIG_FILE])
    logs.configure(settings.log)
    return server.run(settings, create_app)


if __name__ == "__main__":
    raise SystemExit(main())
