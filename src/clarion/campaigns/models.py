"""Tables: campaigns (a template sent once to an audience, now or at a time) and their
recipients, the audience as it was snapshot at launch.

A recipient row is written once per canonical profile when the campaign launches; it is
`pending` until a dispatch job asks messaging for its message (`queued`, with the message's
id) in the same transaction, or `skipped` when the campaign is cancelled first. Its key
(campaign, profile) and the message's idempotency key `campaign:<id>:<profile id>` make one
message per recipient, whatever is retried.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.profiles import models as _profiles  # noqa: F401 - recipients refer to profiles


class Campaign(Base):
    """One broadcast and where it stands.

    `audience` is `{"type": "segment", "segment_id": N}` or `{"type": "list", "user_ids":
    [...], "profile_ids": [...]}`; `channel`, `category` and `topic_id` are the template's
    (read again at launch), kept to check `channel_id` against. `send_mode` (now | at |
    local) with `send_at` (the instant, for now and at) or `local_date` / `local_time` (for
    local) is set when it is sent; `launch_at` is when its launch job runs, and
    `schedule_version` tells that job whether it is still the current one. The launch fills
    `launched_at`, `template_version_id`, `snapshot_*`, `audience_size` and `slots`
    (recipients per send time so far, for the throttle). `shift_seconds` is how long the
    campaign was paused in all: pending recipients go that much later.
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        Index(None, "workspace_id", "name", unique=True),
        Index(None, "workspace_id", "state", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="draft")
    audience: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    template_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(16), default="marketing")
    topic_id: Mapped[int | None] = mapped_column(BigId, default=None)
    channel_id: Mapped[int | None] = mapped_column(BigId, default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    throttle_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    goal_event: Mapped[str | None] = mapped_column(String(200), default=None)
    goal_days: Mapped[int | None] = mapped_column(Integer, default=None)
    send_mode: Mapped[str | None] = mapped_column(String(8), default=None)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    local_date: Mapped[str | None] = mapped_column(String(10), default=None)  # YYYY-MM-DD
    local_time: Mapped[str | None] = mapped_column(String(5), default=None)  # HH:MM
    launch_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    schedule_version: Mapped[int] = mapped_column(Integer, default=0)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    template_version_id: Mapped[int | None] = mapped_column(BigId, default=None)
    snapshot_cursor: Mapped[str | None] = mapped_column(String(512), default=None)
    snapshot_done: Mapped[bool] = mapped_column(Boolean, default=False)
    audience_size: Mapped[int] = mapped_column(Integer, default=0)
    slots: Mapped[dict[str, int]] = mapped_column(JSONDocument, default=dict)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    shift_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    problem: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignRecipient(Base):
    """One canonical profile of a launched campaign's audience: when it is due (`send_at`,
    before any pause), and `pending`, `queued` (with `message_id`) or `skipped` (`reason`)."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        Index(None, "campaign_id", "state", "send_at"),
        Index(None, "profile_id"),  # the cascade of a profile's erasure
    )

    campaign_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    send_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(8), default="pending")
    message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    reason: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
