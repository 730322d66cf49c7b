"""Readiness of the service's dependencies."""

from __future__ import annotations

import asyncio
import logging

from chat_service.errors import Unavailable
from chat_service.model import Database

log = logging.getLogger(__name__)


async def check_database(db: Database, *, within_seconds: float = 3.0) -> None:
    """Check that the database answers a trivial query in time.

    Raises:
        Unavailable: the database did not answer, or answered with an error.
    """
    try:
        await asyncio.wait_for(db.ping(), within_seconds)
    except Exception as error:  # any failure means "not ready", whatever its kind
        log.warning("database is not ready: %s", type(error).__name__)
        raise Unavailable("the database is not reachable") from None
