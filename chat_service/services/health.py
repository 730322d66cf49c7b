"""Readiness of the service's dependencies."""

from __future__ import annotations

import asyncio
import logging

from chat_service.errors import Unavailable
from chat_service.model import SCHEMA_REVISION, Database

log = logging.getLogger(__name__)


async def check_database(db: Database, *, within_seconds: float = 3.0) -> None:
    """Check that the database answers in time and holds the schema this code expects.

    Raises:
        Unavailable: the database did not answer, answered with an error, or has not
            been migrated to this version's schema.
    """
    try:
        revision = await asyncio.wait_for(db.schema_revision(), within_seconds)
    except Exception as error:  # any failure means "not ready", whatever its kind
        log.warning("database is not ready: %s", type(error).__name__)
        raise Unavailable("the database is not reachable") from None
    if revision != SCHEMA_REVISION:
        log.warning("database schema is at %s, expected %s", revision, SCHEMA_REVISION)
        raise Unavailable(
            f"the database schema is at revision {revision or 'none'}, this version needs "
            f"{SCHEMA_REVISION}: run `chat-service migrate`"
        )
