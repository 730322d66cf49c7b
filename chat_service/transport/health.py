"""Health probes: what they answer."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HealthOut(BaseModel):
    """The state of the service."""

    status: str = Field(description="`ok` when the service can do its work.")
