"""Readiness of the service's dependencies."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from chat_service.errors import Unavailable
from chat_service.model import SCHEMA_REVISION, Database
from chat_service.realtime import Bus
from chat_service.services.rate_limits import RateLimiter

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


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's state: ``ok``, or what is wrong, and which kind it is."""

    status: str
    kind: str | None = None
    detail: str | None = None


async def readiness(
    db: Database, bus: Bus, bus_kind: str, limiter: RateLimiter | None, limiter_kind: str
) -> dict[str, Check]:
    """The state of each dependency: the database, the event bus, the rate limits' counts.

    Only the database decides whether the service is ready: without the event bus, live
    clients catch up by the periodic resync; without Redis, requests go uncounted.
    """
    try:
        await check_database(db)
        database = Check("ok", db.dialect)
    except Unavailable as error:
        database = Check("unavailable", db.dialect, error.detail)
    checks = {"database": database}
    if bus.connected:
        checks["event_bus"] = Check("ok", bus_kind)
    else:
        detail = "reconnecting: live events from other processes wait for the resync"
        checks["event_bus"] = Check("disconnected", bus_kind, detail)
    if limiter is not None:
        if await limiter.ready():
            checks["rate_limits"] = Check("ok", limiter_kind)
        else:
            detail = "the counts cannot be reached: requests go through uncounted"
            checks["rate_limits"] = Check("unavailable", limiter_kind, detail)
    return checks
