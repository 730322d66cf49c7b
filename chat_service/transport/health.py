"""Health probes: what they answer."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HealthOut(BaseModel):
    """The state of the service."""

    status: str = Field(description="`ok` when the service can do its work.")


class CheckOut(BaseModel):
    """One dependency's state."""

    status: str = Field(
        description="`ok`; else `unavailable` (database, rate limits) or `disconnected` "
        "(event bus)."
    )
    kind: str | None = Field(
        default=None,
        description="`sqlite` or `postgresql` (database); `memory`, `postgres` or `redis` "
        "(event bus, rate limits).",
    )
    detail: str | None = Field(default=None, description="What is wrong, when it is.")


class ReadyOut(BaseModel):
    """Whether the service can serve requests, and the state of each dependency."""

    status: str = Field(
        description="`ok`; `degraded` when the database answers but the event bus or the "
        "rate limits' Redis does not (the service still serves)."
    )
    checks: dict[str, CheckOut] = Field(
        description="By dependency: `database`, `event_bus`, and `rate_limits` when limits are on."
    )
