"""Tables: segments, who is in them now, every entry and exit, sizes over time, the
per-profile aggregates real-time membership reads, and the workspace's RFM boundaries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.profiles import models as _profiles  # noqa: F401 - the profiles members refer to


class Segment(Base):
    """A named rule. `rule` is stored in canonical JSON (`rules.to_json`); `version` grows
    with every change of it, so parsed rules are cached by (id, version). `template` names
    the ready-made segment it was created from, once per workspace."""

    __tablename__ = "segments"
    __table_args__ = (
        Index(None, "workspace_id", "name", unique=True),
        Index(None, "workspace_id", "template", unique=True),
        # A deleted segment's id is never given to another: rules and journeys name ids.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    rule: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    version: Mapped[int] = mapped_column(Integer, default=1)
    template: Mapped[str | None] = mapped_column(String(64), default=None)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    recomputed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SegmentMember(Base):
    """A canonical profile in a segment now, since `entered_at`."""

    __tablename__ = "segment_members"
    __table_args__ = (Index(None, "workspace_id", "profile_id"),)

    # No foreign keys to the segment (0020), the profile (0017) or the workspace (0012):
    # see ADR 0004. Writers hold the segment instead (`membership.apply_changes`).
    segment_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(Integer)  # the profile's
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SegmentChange(Base):
    """One entry or exit: the membership history. `cause` is realtime (an event or trait
    change), schedule (a condition lapsing with time), recompute (a batch run),
    rule_changed (the first recompute after a rule changed) or merged (a profile merged
    into another)."""

    __tablename__ = "segment_changes"
    __table_args__ = (
        Index(None, "segment_id", "id"),
        Index(None, "profile_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(Integer)  # the profile's (no key: 0012)
    segment_id: Mapped[int] = mapped_column(BigId)  # no key (0020), as members
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    change: Mapped[str] = mapped_column(String(8))  # entered | exited
    cause: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class SegmentSize(Base):
    """A segment's size after a batch recompute, with what it changed: size over time."""

    __tablename__ = "segment_sizes"
    __table_args__ = (Index(None, "segment_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    size: Mapped[int] = mapped_column(Integer)
    entered: Mapped[int] = mapped_column(Integer)
    exited: Mapped[int] = mapped_column(Integer)


class ProfileSegmentState(Base):
    """What real-time evaluation keeps per canonical profile: its event aggregates
    (`aggregates.py`), for the aggregate specs of `specs_version`, and when time alone may
    next change one of its memberships."""

    __tablename__ = "profile_segment_states"

    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(Integer)  # the profile's (no key: 0012)
    aggregates: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    specs_version: Mapped[str] = mapped_column(String(64))
    # Per segment id (text), when time alone next changes its answer (epoch microseconds).
    next_changes: Mapped[dict[str, int | None]] = mapped_column(JSONDocument, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RfmBoundaries(Base):
    """A workspace's RFM quintile boundaries, from the last batch recompute."""

    __tablename__ = "segment_rfm_boundaries"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    recency: Mapped[list[str]] = mapped_column(JSONDocument)  # ISO instants
    frequency: Mapped[list[float]] = mapped_column(JSONDocument)
    monetary: Mapped[list[float]] = mapped_column(JSONDocument)
    monetary_percentiles: Mapped[list[float]] = mapped_column(JSONDocument)  # 1st..99th
    buyers: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
