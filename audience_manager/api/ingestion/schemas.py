"""The shapes of the ingestion API, for its OpenAPI description and its responses.

Requests are not parsed with these models (``bodies`` and ``validation`` do that by hand,
far faster); they describe the same rules so that ``/docs`` tells clients what is accepted.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from audience_manager.api.ingestion.bodies import MAX_BATCH_EVENTS
from audience_manager.api.ingestion.validation import MAX_ID_LENGTH

__all__ = [
    "SEED_EVENT",
    "Accepted",
    "ErrorBody",
    "ErrorDetail",
    "ErrorInfo",
    "EventIn",
    "batch_request_body",
    "event_request_body",
]

SEED_EVENT: dict[str, Any] = {
    "userId": "user123",
    "eventType": "purchase",
    "properties": {"amount": 1500, "category": "electronics"},
}


class EventIn(BaseModel):
    """One user event, as a client sends it."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"examples": [SEED_EVENT]},
    )

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="Who did it.")
    event_type: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="What happened, e.g. `purchase`."
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="Details of the event: nests at most 5 levels, at most 32 KiB as JSON.",
    )
    timestamp: str | int | None = Field(
        default=None,
        description=(
            "When it happened: ISO-8601 (no zone means UTC) or epoch milliseconds, from "
            "2000-01-01 to one day after arrival. Defaults to the arrival time."
        ),
    )
    traits: dict[str, Any] | None = Field(
        default=None,
        description="Profile attributes to set directly (null removes one); same limits.",
    )
    message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="The client's idempotency key: a retried event with it counts once.",
    )


class Accepted(BaseModel):
    """The answer to an accepted request: its events are durably in the log."""

    accepted: int = Field(description="How many events were accepted.")


class ErrorDetail(BaseModel):
    """One problem of a refused request."""

    index: int | None = Field(default=None, description="The event's index in a batch.")
    path: str = Field(description="JSON path of the offending value, e.g. `events[3].eventType`.")
    message: str


class ErrorInfo(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorInfo


def _event_schema() -> dict[str, Any]:
    return EventIn.model_json_schema(by_alias=True)


def event_request_body() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /api/events``: one JSON event."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _event_schema()}},
        }
    }


def batch_request_body() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /api/events/batch``: the three forms of a batch."""
    events = {
        "type": "array",
        "items": _event_schema(),
        "minItems": 1,
        "maxItems": MAX_BATCH_EVENTS,
    }
    wrapped = {
        "title": "EventBatch",
        "type": "object",
        "properties": {"events": events},
        "required": ["events"],
        "additionalProperties": False,
    }
    ndjson_example = "\n".join(
        [
            '{"userId": "user123", "eventType": "page_view", "properties": {"path": "/"}}',
            '{"userId": "user123", "eventType": "purchase", "properties": {"amount": 1500}}',
        ]
    )
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [wrapped, {"title": "EventArray", **events}]},
                    "example": {"events": [SEED_EVENT]},
                },
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": "One JSON event per line (blank lines are ignored).",
                    },
                    "example": ndjson_example,
                },
            },
        }
    }
