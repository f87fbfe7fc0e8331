"""Pydantic input and output shapes for subscription topics, consent, suppressions and the
bulk import of consents."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from clarion.core.database import MAX_ROW_ID
from clarion.core.schemas import DisplayName
from clarion.messaging.channels.base import ChannelKind

DefaultState = Literal["opted_in", "opted_out"]
SettableState = Literal["opted_in", "opted_out"]
ConsentState = Literal["opted_in", "opted_out", "pending"]
# `erased`: a person erased with `suppress=true` (`profiles.erasure.KeepOut`).
SuppressionReason = Literal["hard_bounce", "complaint", "manual", "erased"]

DOUBLE_OPT_IN_CHANNEL = "email"


def double_opt_in_problem(channel: str, double_opt_in: bool) -> str | None:
    """Why a topic of `channel` cannot have `double_opt_in`, or None when it can."""
    if double_opt_in and channel != DOUBLE_OPT_IN_CHANNEL:
        return "double opt-in is for email topics only (the confirmation is an email)"
    return None


def default_state_problem(default_state: str, double_opt_in: bool) -> str | None:
    """Why a topic cannot start in `default_state`, or None when it can."""
    if double_opt_in and default_state == "opted_in":
        return "a double opt-in topic starts opted_out: nobody gets it before confirming"
    return None


class TopicCreate(BaseModel):
    """A new subscription topic. `default_state` defaults to opted_out for a double opt-in
    topic and to opted_in otherwise."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName
    description: str = Field(default="", max_length=2000)
    channel: ChannelKind
    double_opt_in: bool = Field(
        default=False, description="Opting in waits for a confirmation link (email only)."
    )
    default_state: DefaultState | None = Field(
        default=None, description="What a profile that never said anything gets."
    )

    @field_validator("double_opt_in")
    @classmethod
    def _email_only(cls, value: bool, info: ValidationInfo) -> bool:
        problem = double_opt_in_problem(info.data.get("channel", DOUBLE_OPT_IN_CHANNEL), value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("default_state")
    @classmethod
    def _starts_out(cls, value: DefaultState | None, info: ValidationInfo) -> DefaultState | None:
        problem = default_state_problem(value or "", bool(info.data.get("double_opt_in")))
        if problem:
            raise ValueError(problem)
        return value


class TopicUpdate(BaseModel):
    """Changes to a topic; fields left out stay as they are. Its channel never changes."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName | None = None
    description: str | None = Field(default=None, max_length=2000)
    double_opt_in: bool | None = None
    default_state: DefaultState | None = None


class TopicRead(BaseModel):
    """A subscription topic."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    channel: ChannelKind
    default_state: DefaultState
    double_opt_in: bool
    created_at: datetime


class TopicPage(BaseModel):
    """A page of topics, oldest first."""

    items: list[TopicRead]
    next_cursor: str | None


class ConsentSet(BaseModel):
    """A profile's say on one scope: a whole channel, or one topic of it."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelKind
    topic_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROW_ID,
        description="A topic of `channel`; none: the channel.",
        strict=True,
    )
    state: SettableState


class ConsentRead(BaseModel):
    """A profile's say on one scope, and where it came from."""

    model_config = ConfigDict(from_attributes=True)

    scope: str = Field(description='"<channel>" or "<channel>:<topic id>".')
    channel: ChannelKind
    topic_id: int | None
    state: ConsentState
    source: str
    updated_at: datetime


class SuppressionCreate(BaseModel):
    """An address to suppress on a channel (stored normalized)."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelKind
    address: str = Field(min_length=1, max_length=320)
    reason: SuppressionReason = "manual"
    detail: str = Field(default="", max_length=2000)


class SuppressionRead(BaseModel):
    """A suppressed address."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: ChannelKind
    address: str
    reason: SuppressionReason
    detail: str
    created_at: datetime


class SuppressionPage(BaseModel):
    """A page of suppressions, newest first."""

    items: list[SuppressionRead]
    next_cursor: str | None


class ConsentImportItem(BaseModel):
    """One consent to import: the profile by user_id (else email), the channel, a topic by
    id or name (none: the whole channel), and the state."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=255)
    email: str | None = Field(default=None, min_length=1, max_length=255)
    channel: ChannelKind
    topic: int | str | None = Field(default=None, description="A topic id or name.")
    state: SettableState

    @field_validator("topic", mode="before")
    @classmethod
    def _id_or_name(cls, value: object) -> object:
        # One error naming `topic` (a union names each member), and `true` is no id.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
            raise ValueError("must be a topic id or a topic name")
        return value


class ImportProblem(BaseModel):
    """Why the item at `index` was not imported."""

    index: int
    field: str
    message: str


class ConsentImportRead(BaseModel):
    """How many items were applied, and each one refused, by index."""

    applied: int
    errors: list[ImportProblem]
