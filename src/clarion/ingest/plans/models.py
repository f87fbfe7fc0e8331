"""Tables: tracking plans, the sources connected to them, and recorded violations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.workspaces import models as _workspaces  # noqa: F401 - the tables plans refer to


class TrackingPlan(Base):
    """A workspace's plan: a rule (schema, enrichment steps) per event, and two modes.

    `events` holds the rules as the API received them (validated on save; enrichment
    header values sealed, see `secrets.py`); `version` grows
    with every change, so compiled validators are keyed by (id, version).
    """

    __tablename__ = "tracking_plans"
    __table_args__ = (Index(None, "workspace_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean)
    unplanned_events: Mapped[str] = mapped_column(String(8))
    invalid_events: Mapped[str] = mapped_column(String(8))
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TrackingPlanSource(Base):
    """A source connected to a plan; a source has at most one plan."""

    __tablename__ = "tracking_plan_sources"
    __table_args__ = (Index(None, "plan_id"),)

    source_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    plan_id: Mapped[int] = mapped_column(BigId, ForeignKey("tracking_plans.id", ondelete="CASCADE"))


class TrackingViolation(Base):
    """What a review found wrong with one event: unplanned, invalid, or enrichment failed.

    One row per (event, kind): a review re-run after a crash inserts nothing twice.
    """

    __tablename__ = "tracking_violations"
    __table_args__ = (
        Index(None, "workspace_id", "event_id", "kind", unique=True),
        Index(None, "workspace_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(16))
    event_name: Mapped[str | None] = mapped_column(String(255))
    plan_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(8))
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
