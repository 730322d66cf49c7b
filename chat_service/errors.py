"""Domain errors: what the services raise. No web imports here.

Each error has a stable ``code`` (the problem ``type`` slug) and a ``title``;
``routes/problems.py`` maps them to HTTP statuses in one place.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code = "error"
    title = "Request could not be completed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The object does not exist (or the caller may not know that it does)."""

    code = "not-found"
    title = "Resource not found"


class Conflict(DomainError):
    """The request conflicts with the current state of the object."""

    code = "conflict"
    title = "Request conflicts with the current state"


class InvalidCursor(DomainError):
    """A pagination cursor was not issued by this service for this list."""

    code = "invalid-cursor"
    title = "Invalid pagination cursor"


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached right now."""

    code = "unavailable"
    title = "Service temporarily unavailable"


class RateLimited(DomainError):
    """The caller sent more requests of a kind than its limit allows (answers 429)."""

    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, limit: int, policy: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit
        self.policy = policy


class Unauthenticated(DomainError):
    """No credential, or one that is malformed, expired, revoked or not ours."""

    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(DomainError):
    """The caller is known but its role or scopes do not allow this action."""

    code = "forbidden"
    title = "Not allowed"


class InvalidField(DomainError):
    """A well-formed value that names something that cannot be used (answers 422)."""

    code = "validation-error"
    title = "Request is not valid"

    def __init__(
        self, detail: str, *, pointer: str | None = None, parameter: str | None = None
    ) -> None:
        super().__init__(detail)
        self.pointer = pointer
        self.parameter = parameter

    def location(self) -> dict[str, str]:
        """Where the value was: a JSON pointer into the body, or a query parameter."""
        if self.parameter is not None:
            return {"parameter": self.parameter}
        return {"pointer": self.pointer or "#"}
