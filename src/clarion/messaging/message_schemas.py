"""API shapes of messages (send, read, list) and of the workspace's sending rules (quiet
hours, frequency caps)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clarion.core.database import MAX_ROW_ID
from clarion.core.schemas import AwareInstant
from clarion.messaging import policy
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.models import FrequencyCap, Message, MessageEvent, MessagingPolicy
from clarion.messaging.schemas import Strict

MessageStatus = Literal[
    "queued", "sending", "sent", "delivered", "opened", "clicked", "converted",
    "refused", "failed", "bounced", "complained", "unsubscribed",
]  # fmt: skip


class MessageSend(Strict):
    """One message to send now (or at `send_after`) to a profile, by id or user id."""

    template_id: int = Field(ge=1, le=MAX_ROW_ID, strict=True)
    profile_id: uuid.UUID | None = None
    user_id: str | None = Field(default=None, min_length=1, max_length=255)
    channel_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROW_ID,
        description="One of the workspace's channels of the template's kind; else its default.",
        strict=True,
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The same key sends once: a retried request gets the message it made.",
    )
    priority: int = Field(default=0, ge=-100, le=100, strict=True)
    send_after: AwareInstant | None = None
    address: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "Send here instead of the profile's address: an address the template's channel "
            "can send to (email: one ASCII address; sms: a phone number, kept as + and its "
            "digits; push: a device token; webhook: an http(s) URL; inbox: none)."
        ),
    )
    event: dict[str, Any] | None = Field(
        default=None, description="The triggering event for the template: {name, properties}."
    )

    @model_validator(mode="after")
    def _one_recipient(self) -> MessageSend:
        if (self.profile_id is None) == (self.user_id is None):
            raise ValueError("give exactly one of profile_id and user_id")
        return self


class MessageEventRead(BaseModel):
    """One thing that happened to a message."""

    model_config = ConfigDict(from_attributes=True)

    kind: str
    machine: bool
    detail: dict[str, Any]
    at: datetime


class MessageRead(BaseModel):
    """A message and where it stands."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    profile_id: uuid.UUID
    channel: str
    channel_id: int | None
    template_id: int | None
    template_version_id: int | None
    origin: str
    origin_id: str | None
    category: str
    priority: int
    status: str
    reason: str | None
    address: str | None
    attempts: int
    send_after: datetime
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None

    @classmethod
    def of(cls, message: Message) -> MessageRead:
        """The answer for one message."""
        return cls.model_validate(message)


class MessageDetail(MessageRead):
    """A message with its history."""

    history: list[MessageEventRead]

    @classmethod
    def with_history(cls, message: Message, events: list[MessageEvent]) -> MessageDetail:
        """The answer for one message and its events."""
        return cls(
            **MessageRead.of(message).model_dump(),
            history=[MessageEventRead.model_validate(e) for e in events],
        )


class MessagePage(BaseModel):
    """A page of messages, newest first."""

    items: list[MessageRead]
    next_cursor: str | None


class PolicyWrite(Strict):
    """Quiet hours: marketing messages due between `quiet_hours_start` and
    `quiet_hours_end` (local "HH:MM", may span midnight) on `quiet_channels` wait for their
    end, in each profile's `timezone` trait or else `default_timezone`."""

    quiet_hours_start: str | None = None
    quiet_hours_end: str | None = None
    quiet_channels: list[ChannelKind] = Field(default_factory=list)
    default_timezone: str = "UTC"

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _clock(cls, value: str | None) -> str | None:
        if value is not None:
            policy.parse_clock(value)
        return value

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"{value!r} is not an IANA time zone") from error
        return value

    @model_validator(mode="after")
    def _both(self) -> PolicyWrite:
        if (self.quiet_hours_start is None) != (self.quiet_hours_end is None):
            raise ValueError("give both quiet_hours_start and quiet_hours_end, or neither")
        return self


class PolicyRead(PolicyWrite):
    """The workspace's quiet hours."""

    model_config = ConfigDict(from_attributes=True, extra="ignore")

    updated_at: datetime | None = None

    @classmethod
    def of(cls, found: MessagingPolicy | None) -> PolicyRead:
        """The answer, the defaults (no quiet hours) when none is set."""
        return cls() if found is None else cls.model_validate(found)


class CapCreate(Strict):
    """At most `max_messages` marketing messages per profile per `period_seconds`, on one
    channel kind or (no channel) all of them together."""

    channel: ChannelKind | None = None
    max_messages: int = Field(ge=1, le=10_000, strict=True)
    period_seconds: int = Field(ge=60, le=366 * 86_400, strict=True)


class CapRead(BaseModel):
    """A frequency cap."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: str | None
    max_messages: int
    period_seconds: int
    created_at: datetime

    @classmethod
    def of(cls, cap: FrequencyCap) -> CapRead:
        """The answer for one cap."""
        return cls.model_validate(cap)
