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


class InvalidIdempotencyKey(DomainError):
    """An ``Idempotency-Key`` header that is empty, too long or not printable (400)."""

    code = "invalid-idempotency-key"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyReused(DomainError):
    """An ``Idempotency-Key`` used before for a different request (answers 422)."""

    code = "idempotency-key-reused"
    title = "Idempotency-Key used for another request"


class IdempotencyKeyInUse(Conflict):
    """The request first sent with this ``Idempotency-Key`` has not finished (409)."""

    code = "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is in progress"

    def __init__(self, detail: str, *, retry_after: int | None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class IdempotencyAnswerLost(Conflict):
    """The request first sent with this ``Idempotency-Key`` wrote, but its answer is gone.

    Its process stopped between the COMMIT and keeping the answer: running the request
    again would write twice, so the retry answers 409 instead.
    """

    code = "idempotency-answer-lost"
    title = "The answer to this Idempotency-Key was lost"
