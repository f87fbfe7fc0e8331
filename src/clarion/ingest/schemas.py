"""Segment Tracking API message shapes (input) and the event log's output shapes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MAX_ID_LENGTH = 255


class EventType(StrEnum):
    """The six Segment call types."""

    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


def _id_from_wire(value: Any) -> Any:
    """Accept numeric ids as SDKs often send them; an empty string means absent."""
    if isinstance(value, bool):
        return value  # rejected below as not a string
    if isinstance(value, int):
        return str(value)
    if value == "":
        return None
    return value


def _as_utc(value: datetime) -> datetime:
    """Timestamps without an offset are taken as UTC, as Segment does."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
WireId = Annotated[Identifier | None, BeforeValidator(_id_from_wire)]
RequiredWireId = Annotated[Identifier, BeforeValidator(_id_from_wire)]
Timestamp = Annotated[datetime, AfterValidator(_as_utc)]
Document = dict[str, Any]


class SegmentMessage(BaseModel):
    """Fields every Segment call shares. Unknown top-level fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=False)

    message_id: Annotated[str | None, Field(max_length=MAX_ID_LENGTH)] = Field(
        None, alias="messageId"
    )
    user_id: WireId = Field(None, alias="userId")
    anonymous_id: WireId = Field(None, alias="anonymousId")
    timestamp: Timestamp | None = None
    original_timestamp: Timestamp | None = Field(None, alias="originalTimestamp")
    sent_at: Timestamp | None = Field(None, alias="sentAt")
    context: Document | None = None
    integrations: Document | None = None


class IdentifyMessage(SegmentMessage):
    """Who the user is: traits to set on their profile."""

    type: Literal["identify"] = "identify"
    traits: Document | None = None


class TrackMessage(SegmentMessage):
    """Something the user did."""

    type: Literal["track"] = "track"
    event: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    properties: Document | None = None


class PageMessage(SegmentMessage):
    """A web page the user viewed."""

    type: Literal["page"] = "page"
    name: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None
    properties: Document | None = None


class ScreenMessage(SegmentMessage):
    """An app screen the user viewed."""

    type: Literal["screen"] = "screen"
    name: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None
    properties: Document | None = None


class GroupMessage(SegmentMessage):
    """The user belongs to an account (a company, a household)."""

    type: Literal["group"] = "group"
    group_id: RequiredWireId = Field(alias="groupId")
    traits: Document | None = None


class AliasMessage(SegmentMessage):
    """`previousId` and `userId` are the same person."""

    type: Literal["alias"] = "alias"
    previous_id: RequiredWireId = Field(alias="previousId")


Message = IdentifyMessage | TrackMessage | PageMessage | ScreenMessage | GroupMessage | AliasMessage

MESSAGE_MODELS: dict[str, type[SegmentMessage]] = {
    EventType.IDENTIFY: IdentifyMessage,
    EventType.TRACK: TrackMessage,
    EventType.PAGE: PageMessage,
    EventType.SCREEN: ScreenMessage,
    EventType.GROUP: GroupMessage,
    EventType.ALIAS: AliasMessage,
}


class BatchRequest(BaseModel):
    """`POST /v1/batch`: messages of any type; top-level context and integrations apply to all."""

    batch: list[Annotated[Message, Field(discriminator="type")]]
    sent_at: datetime | None = Field(None, alias="sentAt")
    context: Document | None = None
    integrations: Document | None = None
    write_key: str | None = Field(None, alias="writeKey")


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
