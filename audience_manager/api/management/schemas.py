"""What the management API's domains share: the camelCase JSON base model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["ERROR_RESPONSES", "ApiModel", "ErrorBody", "ErrorDetail", "ErrorResponse"]


class ApiModel(BaseModel):
    """A request or response body: camelCase in JSON, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class ErrorDetail(BaseModel):
    """One problem with a request: where it is (``rules.conditions[1].operator``) and what."""

    path: str
    message: str


class ErrorBody(BaseModel):
    """A machine-readable code, a message for people, and located details."""

    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("Malformed JSON"),
    401: _documented("No valid API key"),
    403: _documented("The API key lacks the scope"),
    404: _documented("Unknown segment, user or attribute"),
    409: _documented("Conflicts with the current state"),
    422: _documented("Invalid fields; `details` name each path"),
    503: _documented("A backend or the processor is unavailable; see `Retry-After`"),
}
"""The error responses every management route documents in OpenAPI."""
