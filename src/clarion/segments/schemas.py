"""Pydantic input and output shapes for segments, their members and their history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.core.schemas import DisplayName

RULE_DESCRIPTION = (
    "The rule: a condition object (see the segments README for every type), or the "
    'conjunctive array form `[["plan eq pro", "plan eq team"], ["age gte 18"]]`.'
)


class SegmentCreate(BaseModel):
    """A new segment."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName
    description: str = Field(default="", max_length=2000)
    rule: dict[str, Any] | list[Any] = Field(description=RULE_DESCRIPTION)


class SegmentUpdate(BaseModel):
    """Changes to a segment; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName | None = None
    description: str | None = Field(default=None, max_length=2000)
    rule: dict[str, Any] | list[Any] | None = Field(default=None, description=RULE_DESCRIPTION)


class RuleCheck(BaseModel):
    """A rule to validate or preview."""

    model_config = ConfigDict(extra="forbid")

    rule: dict[str, Any] | list[Any] = Field(description=RULE_DESCRIPTION)


class Warning_(BaseModel):
    """Something that may be a mistake but is allowed (data may not have arrived yet)."""

    field: str = Field(description="The node, as a dotted path into the rule.")
    message: str


class RuleChecked(BaseModel):
    """A valid rule in its canonical form, with its warnings."""

    rule: dict[str, Any]
    warnings: list[Warning_]


class SegmentRead(BaseModel):
    """A segment."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    rule: dict[str, Any]
    version: int
    template: str | None
    member_count: int
    recomputed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SegmentSaved(SegmentRead):
    """A segment just saved, with its rule's warnings."""

    warnings: list[Warning_] = Field(default_factory=list)


class SegmentPage(BaseModel):
    """A page of segments."""

    items: list[SegmentRead]
    next_cursor: str | None


class Preview(BaseModel):
    """Who a rule selects now, before it is saved."""

    count: int
    sample: list[uuid.UUID] = Field(description="Up to `sample` member profile ids.")
    warnings: list[Warning_]


class MemberRead(BaseModel):
    """A profile in a segment."""

    profile_id: uuid.UUID
    entered_at: datetime


class MemberPage(BaseModel):
    """A page of a segment's members, by profile id."""

    items: list[MemberRead]
    next_cursor: str | None


class MembershipRead(BaseModel):
    """A segment a profile is in."""

    segment_id: int
    name: str
    entered_at: datetime


class ChangeRead(BaseModel):
    """One entry or exit."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    segment_id: int
    profile_id: uuid.UUID
    change: Literal["entered", "exited"]
    cause: str
    at: datetime


class ChangePage(BaseModel):
    """A page of membership history, newest first."""

    items: list[ChangeRead]
    next_cursor: str | None


class SizeRead(BaseModel):
    """A segment's size after a recompute."""

    model_config = ConfigDict(from_attributes=True)

    at: datetime
    size: int
    entered: int
    exited: int


class RecomputeRead(BaseModel):
    """What a batch recompute changed."""

    segment_id: int
    size: int
    entered: int
    exited: int
    at: datetime


class TemplateRead(BaseModel):
    """A ready-made segment."""

    model_config = ConfigDict(from_attributes=True)

    key: str
    name: str
    description: str
    rule: dict[str, Any]
