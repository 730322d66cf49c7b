"""Logging set-up: text for development, JSON lines for production, request ids."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from chat_service.config import LogSettings

request_id: ContextVar[str] = ContextVar("request_id", default="")

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
# Fields of every JSON line; a line's ``extra`` fields (the access line's route,
# method, status...) are added after them.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
# The logger of the access lines (chat_service.routes.access).
ACCESS_LOGGER = "chat_service.access"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being handled ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``request_id`` to the record; never drops it."""
        record.request_id = request_id.get() or "-"
        return True


def configure(settings: LogSettings) -> None:
    """Send every log line to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # SQLAlchemy's echo is configured by database.echo; its loggers must not add
    # handlers of their own.
    for name in ("hypercorn.error", "hypercorn.access", "quart.app", "quart.serving"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # aiosqlite logs every operation at DEBUG with its SQL parameters, which hold chat
    # text; LOG_LEVEL=DEBUG must not put customer data in the logs.
    logging.getLogger("aiosqlite").setLevel(max(root.level, logging.INFO))
