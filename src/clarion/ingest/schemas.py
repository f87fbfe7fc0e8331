"""Shapes the ingestion API answers with; the Segment wire format is in `messages.py`."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Document = dict[str, Any]


class EventType(StrEnum):
    """The six Segment call types."""

    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


class Rejection(BaseModel):
    """A batch message that was not stored, and why."""

    index: int
    field: str
    message: str


class IngestResult(BaseModel):
    """The answer to an accepted call: everything valid is committed."""

    success: Literal[True] = True
    accepted: int = Field(description="Messages stored by this request.")
    duplicates: int = Field(description="Messages skipped: their messageId was already stored.")
    rejected: list[Rejection] = Field(
        default_factory=list, description="Batch messages refused, by index and reason."
    )


class EventRead(BaseModel):
    """An event as stored, with Segment's timestamps resolved."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    source_id: uuid.UUID
    message_id: str
    type: EventType
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    properties: Document | None
    traits: Document | None
    context: Document | None
    integrations: Document | None
    extra: Document | None


class EventPage(BaseModel):
    """A page of events, newest first; pass `next_cursor` back as `cursor` for the next."""

    items: list[EventRead]
    next_cursor: str | None
