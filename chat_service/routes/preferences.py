"""The ``Prefer`` request header (RFC 7240)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PreferHeader(BaseModel):
    """Request headers understood when creating a message."""

    prefer: str | None = Field(
        default=None,
        description="`return=minimal` answers with the created message alone "
        "instead of the whole session (RFC 7240).",
    )


def prefers_minimal(prefer: str) -> bool:
    """Whether the ``Prefer`` header value asks for ``return=minimal``."""
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
            return True
    return False
