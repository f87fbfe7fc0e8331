"""Pydantic input and output shapes for campaigns, their audience previews, recipients and
results."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from clarion.campaigns.models import Campaign
from clarion.core.database import MAX_ROW_ID
from clarion.core.schemas import AwareInstant, DisplayName

MAX_LIST = 10_000  # entries of a list audience (user ids and profile ids together)

State = Literal["draft", "scheduled", "sending", "sent", "paused", "cancelled"]
RecipientState = Literal["pending", "queued", "skipped"]
Id = Annotated[int, Field(ge=1, le=MAX_ROW_ID, strict=True)]


class Strict(BaseModel):
    """An input model: unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(extra="forbid")


class SegmentAudience(Strict):
    """Everyone in a segment when the campaign launches."""

    type: Literal["segment"]
    segment_id: Id


class ListAudience(Strict):
    """Given customers: by user id and / or profile id. Those that resolve to no profile
    when the campaign launches are left out; a profile named twice gets one message."""

    type: Literal["list"]
    user_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=MAX_LIST
    )
    profile_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_LIST)

    @model_validator(mode="after")
    def _sized(self) -> ListAudience:
        total = len(self.user_ids) + len(self.profile_ids)
        if total == 0:
            raise ValueError("name at least one user id or profile id")
        if total > MAX_LIST:
            raise ValueError(f"at most {MAX_LIST} user ids and profile ids together")
        return self


Audience = Annotated[SegmentAudience | ListAudience, Field(discriminator="type")]


class Goal(Strict):
    """What counts as a conversion: the recipient performs `event` within `within_days`
    after their message was sent."""

    event: str = Field(min_length=1, max_length=200)
    within_days: int = Field(ge=1, le=365, strict=True)


class CampaignCreate(Strict):
    """A new campaign, in draft."""

    name: DisplayName
    description: str = Field(default="", max_length=2000)
    audience: Audience
    template_id: Id = Field(
        description="The template; its channel and category are the campaign's."
    )
    channel_id: Id | None = Field(
        default=None, description="A channel of the template's kind; else the kind's default."
    )
    priority: int = Field(
        default=0,
        ge=-100,
        le=100,
        description="Higher wins when frequency caps arbitrate.",
        strict=True,
    )
    throttle_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Messages per minute at most; none: all at once.",
        strict=True,
    )
    goal: Goal | None = None


class CampaignUpdate(Strict):
    """Changes to a draft or scheduled campaign; fields left out stay as they are. A null
    `channel_id`, `throttle_per_minute` or `goal` removes it; null for any other field is
    refused (422 naming it): a campaign cannot be without it."""

    name: DisplayName | None = None
    description: str | None = Field(default=None, max_length=2000)
    audience: Audience | None = None
    template_id: Id | None = None
    channel_id: Id | None = None
    priority: int | None = Field(default=None, ge=-100, le=100, strict=True)
    throttle_per_minute: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    goal: Goal | None = None

    @field_validator("name", "description", "audience", "template_id", "priority", mode="before")
    @classmethod
    def _kept(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be removed; leave it out to keep it as it is")
        return value


class SendRequest(Strict):
    """When to send: `now`; `at` an instant (with its offset); or `local`: on `local_date`
    at `local_time` in each recipient's own time zone (at least 24 h ahead, see README).
    A schedule is at most 365 days ahead."""

    when: Literal["now", "at", "local"] = "now"
    at: AwareInstant | None = None
    local_date: date | None = None
    local_time: str | None = Field(default=None, description="HH:MM, 24-hour wall time.")


class PreviewRequest(Strict):
    """An audience to preview before saving it."""

    audience: Audience


class SampleProfile(BaseModel):
    """A profile the audience holds."""

    profile_id: uuid.UUID
    user_id: str | None


class AudiencePreview(BaseModel):
    """How many profiles the audience holds now, and some of them."""

    count: int
    sample: list[SampleProfile]


class CampaignRead(BaseModel):
    """A campaign."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    state: State
    audience: dict[str, object]
    template_id: int
    channel: str
    category: str
    channel_id: int | None
    priority: int
    throttle_per_minute: int | None
    goal: Goal | None
    send_mode: Literal["now", "at", "local"] | None
    send_at: datetime | None
    local_date: str | None
    local_time: str | None
    launch_at: datetime | None
    launched_at: datetime | None
    template_version_id: int | None
    audience_size: int
    paused_at: datetime | None
    paused_seconds: float
    finished_at: datetime | None
    problem: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, campaign: Campaign) -> CampaignRead:
        """The campaign as the API shows it."""
        goal = None
        if campaign.goal_event is not None and campaign.goal_days is not None:
            goal = Goal(event=campaign.goal_event, within_days=campaign.goal_days)
        stored = {
            name: getattr(campaign, name)
            for name in cls.model_fields
            if name not in ("goal", "paused_seconds")
        }
        return cls.model_validate(
            {**stored, "goal": goal, "paused_seconds": campaign.shift_seconds}
        )


class CampaignPage(BaseModel):
    """A page of campaigns, newest first."""

    items: list[CampaignRead]
    next_cursor: str | None


class RecipientRead(BaseModel):
    """One recipient of a launched campaign."""

    model_config = ConfigDict(from_attributes=True)

    profile_id: uuid.UUID
    send_at: datetime = Field(description="When it is due, before any pause.")
    state: RecipientState
    message_id: uuid.UUID | None
    reason: str | None


class RecipientPage(BaseModel):
    """A page of a campaign's recipients, by profile id."""

    items: list[RecipientRead]
    next_cursor: str | None


class ByWho(BaseModel):
    """Messages opened (a click counts as an open) or clicked, by people and by machines
    (mail privacy proxies, link scanners); a message both counts in each."""

    human: int
    machine: int


class HourRead(BaseModel):
    """What happened in one hour (UTC): messages sent, first human opens (a click without
    one counts as one) and clicks; over all hours, the results' human opens and clicks."""

    hour: datetime
    sent: int
    opened: int
    clicked: int


class CampaignResults(BaseModel):
    """What a campaign did, counted per message (one per recipient)."""

    audience: int = Field(description="Recipients the launch took.")
    pending: int = Field(description="Recipients not asked for yet.")
    queued: int = Field(description="Recipients whose message was made.")
    skipped: int = Field(description="Recipients left out (the campaign was cancelled).")
    waiting: int = Field(description="Messages not sent yet (queued or being sent).")
    sent: int
    delivered: int
    bounced: int
    complained: int
    failed: int
    refused: int
    refusals: dict[str, int] = Field(description="Refused messages by reason.")
    opened: ByWho
    clicked: ByWho
    unsubscribed: int
    converted: int | None = Field(description="Recipients who reached the goal; null: no goal.")
    revenue: dict[str, int] = Field(
        description="The conversions' revenue (or total), in minor units per ISO 4217 currency."
    )
    hourly: list[HourRead]
