"""Who is calling, and what each kind of caller may do.

Routes resolve a credential into a ``Principal``; services ask this module before
they touch anything. Objects of another tenant, and sessions other than a customer's
own, answer ``NotFound`` exactly as missing ones do; a caller whose role or scopes do
not allow an action gets ``Forbidden``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from chat_service.errors import Forbidden, NotFound
from chat_service.model import DEFAULT_TENANT_ID, AuthorType, Role


class Scope(enum.StrEnum):
    """What a credential allows."""

    SESSIONS_READ = "sessions:read"
    SESSIONS_WRITE = "sessions:write"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)
STAFF_SCOPES = frozenset({Scope.SESSIONS_READ, Scope.SESSIONS_WRITE})
ROLE_SCOPES = {Role.AGENT: STAFF_SCOPES, Role.ADMIN: ALL_SCOPES}


class Kind(enum.StrEnum):
    """The kinds of caller."""

    CUSTOMER = "customer"  # holds the token of one session
    AGENT = "agent"  # a member of the support side (role agent or admin)
    SERVICE = "service"  # a machine client's API key
    LOCAL = "local"  # no credential while authentication is not required


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``id`` is the agent's id (agents), the key's id (service keys), or None.
    ``session_id`` is the one session a customer may use. ``credential`` names the
    credential itself (``key:<id>``, ``jwt:<subject>``): one agent may hold several.
    """

    kind: Kind
    tenant_id: uuid.UUID
    scopes: frozenset[str]
    id: uuid.UUID | None = None
    role: Role | None = None
    session_id: uuid.UUID | None = None
    credential: str = ""

    @property
    def is_customer(self) -> bool:
        """Whether this is a session's customer (who never sees internal notes)."""
        return self.kind is Kind.CUSTOMER

    @property
    def author_type(self) -> AuthorType | None:
        """The author type of what this caller writes; None: the caller says (local)."""
        if self.kind is Kind.LOCAL:
            return None
        return AuthorType.CUSTOMER if self.is_customer else AuthorType.SERVICE_AGENT

    @property
    def reader_id(self) -> uuid.UUID:
        """Whose read position counts for unread counts (a customer's: the session's id)."""
        if self.is_customer and self.session_id is not None:
            return self.session_id
        return self.id or uuid.UUID(int=0)

    @property
    def actor(self) -> tuple[str, uuid.UUID | None]:
        """How live events name the caller: its kind and id (a customer has no id)."""
        return self.kind.value, None if self.is_customer else self.id

    def require(self, scope: Scope) -> None:
        """Raise ``Forbidden`` unless the credential has ``scope``."""
        if scope not in self.scopes:
            raise Forbidden(f"this credential lacks the {scope} scope")

    def require_staff(self, scope: Scope) -> None:
        """Raise ``Forbidden`` for customers, and unless the credential has ``scope``."""
        if self.is_customer:
            raise Forbidden("customers cannot do this")
        self.require(scope)

    def check_session(self, session_id: uuid.UUID, scope: Scope) -> None:
        """Check that the caller may use session ``session_id`` with ``scope``.

        Raises:
            Forbidden: the credential lacks ``scope``.
            NotFound: a customer asked for a session other than their own.
        """
        self.require(scope)
        if self.is_customer and session_id != self.session_id:
            raise NotFound(f"session {session_id} does not exist")


def local_principal() -> Principal:
    """The caller without a credential while authentication is not required."""
    return Principal(kind=Kind.LOCAL, tenant_id=DEFAULT_TENANT_ID, scopes=STAFF_SCOPES)


def customer(tenant_id: uuid.UUID, session_id: uuid.UUID) -> Principal:
    """The customer holding the token of ``session_id``."""
    return Principal(
        kind=Kind.CUSTOMER, tenant_id=tenant_id, scopes=STAFF_SCOPES, session_id=session_id
    )
