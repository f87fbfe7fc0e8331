"""The event log: one append-only row per accepted Segment message."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.workspaces import models as _workspaces  # noqa: F401 - the table events refer to


class Event(Base):
    """An accepted message (identify, track, page, screen, group or alias), never updated.

    `name` is the track event's name or the page / screen name. `properties` holds a track's,
    page's or screen's properties; `traits` an identify's or group's traits. Top-level fields
    outside the Segment spec are kept in `extra`.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "workspace_id", "message_id", unique=True),
        # Deliberately no index by user, anonymous id or name: each one costs the append
        # 10-25% (docs/adr/0002). Per-profile reads go through the profile timeline.
        Index(None, "workspace_id", "timestamp", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    source_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    message_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    anonymous_id: Mapped[str | None] = mapped_column(String(255))
    group_id: Mapped[str | None] = mapped_column(String(255))
    previous_id: Mapped[str | None] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    original_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    traits: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    integrations: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
