"""Messages: what clients send and what they get back."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

AuthorTypeName = Literal["customer", "service_agent"]
VisibilityName = Literal["public", "internal"]
# What str.isspace() calls whitespace (and strip() removes), spelled out: in a JSON Schema
# pattern, \s would mean ECMA-262's whitespace, and Rust's and Python's are each different.
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# The text storable_text accepts: no NUL, and at least one character that is not whitespace.
STORABLE_TEXT_PATTERN = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"


def storable_text(value: str) -> str:
    """``value`` if a database can store it and it is not blank; else ValueError."""
    # PostgreSQL cannot store NUL, and a lone surrogate cannot be encoded as UTF-8.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class DocumentedPattern:
    """Annotation: the JSON Schema ``pattern`` of a string that a validator checks.

    The validator gives the client a clearer message than a failed pattern would.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


StorableText = Annotated[
    str, AfterValidator(storable_text), DocumentedPattern(STORABLE_TEXT_PATTERN)
]


def within_limit(value: str, info: ValidationInfo) -> str:
    """Refuse text longer than ``limits.message_chars`` (given in the validation context)."""
    limit = (info.context or {}).get("message_chars")
    if limit is not None and len(value) > limit:
        raise PydanticCustomError(
            "string_too_long",
            "String should have at most {max_length} characters",
            {"max_length": limit},
        )
    return value


class NewMessage(BaseModel):
    """A message to post to a session."""

    model_config = ConfigDict(extra="forbid", strict=True)

    content: StorableText = Field(
        min_length=1,
        description="The text of the message: not blank, no NUL, at most "
        "`limits.message_chars` characters (10 000 by default).",
    )
    author_type: AuthorTypeName | None = Field(
        default=None,
        description="Who writes the message. Taken from the credential: it may only "
        "repeat it. Required without a credential (when authentication is off).",
    )
    visibility: VisibilityName = Field(
        default="public",
        description="`internal`: a note for the support side, never shown to customers.",
    )

    _within_limit = field_validator("content")(within_limit)


class MessageEdit(BaseModel):
    """The new text of a message."""

    model_config = ConfigDict(extra="forbid", strict=True)

    content: StorableText = Field(
        min_length=1, description="The new text, under the same rules as a new message."
    )

    _within_limit = field_validator("content")(within_limit)


class MessageOut(BaseModel):
    """A message of a session, in the order given by `seq`."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The message's id.")
    seq: int = Field(
        description="Position in the session: 1, 2, 3, ... without gaps (customers do "
        "not see the seqs of internal notes)."
    )
    author_type: Literal["customer", "service_agent", "system"] = Field(
        description="Who wrote the message; `system` for events."
    )
    content: str = Field(description="The text of the message (empty once deleted).")
    timestamp: datetime = Field(
        validation_alias="created_at", description="When the message was posted (UTC)."
    )
    type: Literal["message", "event"] = Field(
        validation_alias="kind",
        description="`message`, or `event`: a change the service recorded (status, "
        "assignee, priority, tags), described in `event`.",
    )
    visibility: VisibilityName = Field(
        description="`internal` notes are seen by the support side only."
    )
    author_id: uuid.UUID | None = Field(
        description="The agent or service key that wrote it, or made the change an event "
        "records; null for customers, the greeting, calls without a credential and "
        "automatic events."
    )
    edited_at: datetime | None = Field(description="When the author last edited it (UTC).")
    deleted: bool = Field(description="True for a deleted message: its content is gone.")
    event: dict[str, Any] | None = Field(
        description="For events: `name` (`status_changed`, `assignee_changed`, "
        "`priority_changed`, `tags_changed`), `from` and `to`."
    )


class MessagePageOut(BaseModel):
    """A page of a session's messages, oldest first."""

    model_config = ConfigDict(from_attributes=True)

    items: list[MessageOut] = Field(description="The messages of this page.")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null when this is the last page."
    )


class PageQuery(BaseModel):
    """Query parameters of a page of any list."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(default=None, description="Items per page.")
    after: str | None = Field(
        default=None, max_length=256, description="`next_cursor` of the previous page."
    )

    @field_validator("limit", mode="before")
    @classmethod
    def _digits_only(cls, value: object) -> object:
        return whole_number(value)


class MessagePageQuery(PageQuery):
    """Query parameters of a page of messages."""


def whole_number(value: object) -> object:
    """Refuse query text that is not plain digits before pydantic reads it as an int.

    Python's int() would take "5_0", "+5", " 3"; "2.0" would pass lax mode.
    """
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,9}", value):
        raise PydanticCustomError("int_parsing", "Input should be a whole number")
    return value


class PreferHeader(BaseModel):
    """Request headers understood when creating a message."""

    prefer: str | None = Field(
        default=None,
        description="`return=minimal` answers with the created message alone "
        "instead of the whole session (RFC 7240).",
    )
