"""The ``Prefer`` request header (RFC 7240)."""

from __future__ import annotations


def prefers_minimal(prefer: str) -> bool:
    """Whether the ``Prefer`` header value asks for ``return=minimal``."""
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "return":
            # RFC 7240 section 2: only the first instance of a preference counts.
            return value.strip().strip('"').lower() == "minimal"
    return False
