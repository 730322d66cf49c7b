"""The RFC 9457 problem document every error answers with."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    """One invalid input: a body field (``pointer``) or a query/header ``parameter``."""

    detail: str = Field(description="What is wrong with the value.")
    pointer: str | None = Field(
        default=None, description="JSON Pointer to the body field, e.g. `#/content`."
    )
    parameter: str | None = Field(default=None, description="Name of the query parameter.")


class Problem(BaseModel):
    """An error, as an RFC 9457 `application/problem+json` document."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="URI naming the kind of problem, e.g. `urn:chat-service:problem:not-found`."
    )
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    errors: list[FieldError] | None = Field(
        default=None, description="For validation failures: each invalid input."
    )
