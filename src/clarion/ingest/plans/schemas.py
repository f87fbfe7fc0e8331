"""Pydantic input and output shapes for tracking plans and violations."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.core.schemas import DisplayName


class Mode(StrEnum):
    """What happens to an unplanned or invalid event."""

    ALLOW = "allow"  # passes, nothing recorded
    WARN = "warn"  # passes, a violation is recorded
    BLOCK = "block"  # stays in the log, goes no further; a violation is recorded


class RuleType(StrEnum):
    """The calls a plan can describe; `alias` carries no payload to check."""

    TRACK = "track"
    IDENTIFY = "identify"
    GROUP = "group"
    PAGE = "page"
    SCREEN = "screen"


class ViolationKind(StrEnum):
    """Why a violation was recorded."""

    UNPLANNED = "unplanned"
    INVALID = "invalid"
    ENRICHMENT_FAILED = "enrichment_failed"


class Action(StrEnum):
    """What was done with the event."""

    WARNED = "warned"
    BLOCKED = "blocked"
    ALLOWED = "allowed"


# What reads show instead of a header's value; sent back, it keeps the stored value.
HIDDEN = "<hidden>"


class EnrichmentStep(BaseModel):
    """One call made for each matching event; its answer adds properties to the event."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Names the step in failures.")
    kind: Literal["http", "graphql"]
    url: str = Field(min_length=1, max_length=2000, description="http:// or https:// URL.")
    method: Literal["GET", "POST"] = Field(
        default="GET", description="HTTP steps only; GraphQL is always POST."
    )
    query: str | None = Field(
        default=None, max_length=20_000, description="The GraphQL document (GraphQL steps)."
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Variable name -> event path (`properties.sku`, `user_id`, `context.ip`). "
            "GraphQL variables; for HTTP, `{name}` in the URL, else query parameters (GET) "
            "or a JSON body (POST)."
        ),
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            f"Sent with each call. Values are never shown again: reads give {HIDDEN!r}, and "
            f"{HIDDEN!r} sent back keeps the stored value."
        ),
    )
    mapping: dict[str, str] = Field(
        min_length=1,
        description=(
            "Response path (dotted; GraphQL paths start inside `data`) -> property to add."
        ),
    )
    timeout_s: float = Field(default=2.0, gt=0, le=10, strict=True)
    cache_ttl_s: float = Field(default=60.0, ge=0, le=86_400, strict=True)


class EventRule(BaseModel):
    """The plan's rule for one event: a schema for its payload and enrichment steps.

    `track` rules need a name. `identify` and `group` rules have none and check traits.
    `page` and `screen` rules check properties; with no name they cover every page
    (or screen) that has no rule of its own.
    """

    model_config = ConfigDict(extra="forbid")

    type: RuleType = RuleType.TRACK
    name: str | None = Field(default=None, min_length=1, max_length=255)
    json_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema (draft 2020-12) of the properties (traits for identify/group).",
    )
    enrichments: list[EnrichmentStep] = Field(default_factory=list, max_length=10)


class TrackingPlanCreate(BaseModel):
    """A new plan."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName
    default: bool = Field(
        default=False, description="Applies to sources connected to no plan (one per workspace)."
    )
    source_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    unplanned_events: Mode = Mode.WARN
    invalid_events: Mode = Mode.WARN
    events: list[EventRule] = Field(default_factory=list, max_length=2000)


class TrackingPlanUpdate(TrackingPlanCreate):
    """A plan's new content, replacing the old as a whole."""


class TrackingPlanRead(BaseModel):
    """A plan as the API shows it."""

    id: int
    name: str
    default: bool
    source_ids: list[uuid.UUID]
    unplanned_events: Mode
    invalid_events: Mode
    events: list[EventRule]
    version: int
    created_at: datetime
    updated_at: datetime


class TrackingPlanPage(BaseModel):
    """The workspace's plans."""

    items: list[TrackingPlanRead]


class ViolationErrorRead(BaseModel):
    """One thing wrong: where (a JSON path into the event) and what."""

    path: str
    message: str


class ViolationRead(BaseModel):
    """A recorded violation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: int
    message_id: str
    event_type: str
    event_name: str | None
    plan_id: int | None
    kind: ViolationKind
    action: Action
    errors: list[ViolationErrorRead]
    created_at: datetime


class ViolationPage(BaseModel):
    """A page of violations, newest first; pass `next_cursor` back as `cursor`."""

    items: list[ViolationRead]
    next_cursor: str | None
