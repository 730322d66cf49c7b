"""Declarative base, portable column types and id/time helpers."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import uuid_utils.compat
from sqlalchemy import DateTime, Dialect, Enum, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

# The Alembic revision these models describe; a test keeps it equal to the newest one.
SCHEMA_REVISION = "0005"
# The tenant every row belonged to before tenants existed, and the one served when
# authentication is not required.
DEFAULT_TENANT_ID = uuid.UUID(int=0)
DEFAULT_TENANT_SLUG = "default"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A new time-ordered (version 7) UUID: new rows cluster at the end of indexes."""
    return uuid_utils.compat.uuid7()


def schema_filter(dialect: str) -> Callable[..., bool]:
    """An Alembic ``include_object`` that leaves out what ``dialect`` never gets.

    An index made only on one database (``Index(...).ddl_if(dialect=...)``) is not a
    difference on the others.
    """

    def include(item: Any, _name: str | None, kind: str, reflected: bool, _other: Any) -> bool:
        if kind != "index" or reflected:
            return True
        only_on = getattr(getattr(item, "_ddl_if", None), "dialect", None)
        return only_on is None or only_on == dialect

    return include


def string_enum(kind: type[enum.StrEnum], name: str) -> Enum:
    """A portable enum column: VARCHAR with a CHECK constraint, storing the values."""
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda kinds: [item.value for item in kinds],
        validate_strings=True,
    )


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC on every database and always read back timezone-aware.

    SQLite has no timezone type and drops the offset, so values are normalised to UTC
    before they are written and tagged as UTC when they are read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC (naive UTC on SQLite); refuse naive datetimes."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)  # noqa: S101 - the column type guarantees it
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of every model; constraint names follow one convention on both databases."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy API
