"""Tables: journeys (the drawn graph being edited, and where the journey stands) and their
published versions (the graph as published and its compiled plan, never changed after).

A journey is `draft` until first published, then `live`; `paused` stops new entries and
holds runs where they are; `archived` is the end (nothing enters or moves, nothing can be
published). Publishing compiles the draft into a new version, numbered from 1; runs stay on
the version they entered.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.profiles import models as _profiles  # noqa: F401 - runs refer to profiles


class Journey(Base):
    """A journey, its draft graph and its live version."""

    __tablename__ = "journeys"
    __table_args__ = (
        # An archived journey's name is free again (journeys are archived, never deleted).
        Index(
            None,
            "workspace_id",
            "name",
            unique=True,
            sqlite_where=text("state <> 'archived'"),
            postgresql_where=text("state <> 'archived'"),
        ),
        Index(None, "workspace_id", "state", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="draft")
    draft: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    live_version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JourneyVersion(Base):
    """One published version: the graph as published and the plan compiled from it."""

    __tablename__ = "journey_versions"
    __table_args__ = (
        Index(None, "journey_id", "number", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(BigId, ForeignKey("journeys.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    graph: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    plan: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Run states: `active` (moving through instant nodes), `waiting` (at a wait node), then one of
# `completed` (reached an exit), `exited` (an exit criterion, a holdout, the journey
# archived) or `failed` (an action that cannot be done).
LIVE_RUN_STATES = ("active", "waiting")


class JourneyRun(Base):
    """One profile's way through one version of a journey, for one entry key.

    At most one live run per (journey, profile, entry key): a partial unique index over the
    live states. `context` keeps the triggering event (`{"event": {"name", "properties"}}`)
    for conditions and templates; `wake_at` is when a waiting run's timer fires;
    `converted_at` when the journey's goal event happened within its window after entry
    (whatever the run's state by then).
    """

    __tablename__ = "journey_runs"
    __table_args__ = (
        Index(
            "ix_journey_runs_live_key",
            "journey_id",
            "profile_id",
            "entry_key",
            unique=True,
            sqlite_where=text("state IN ('active', 'waiting')"),
            postgresql_where=text("state IN ('active', 'waiting')"),
        ),
        Index(None, "workspace_id", "profile_id", "state"),
        Index(None, "journey_id", "state", "node"),
        Index(None, "profile_id"),  # the cascade of a profile's erasure
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(BigId, ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("profiles.id", ondelete="CASCADE")
    )
    entry_key: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16), default="active")
    node: Mapped[str] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    wake_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class JourneyTransition(Base):
    """A run's move from one node to another (`from_node` None: it entered), and why.

    Its one foreign key is to the run: the workspace and journey are copied for indexes
    (any deletion reaches a transition through its run), as each foreign key costs a
    lookup per row on this, the engine's busiest table."""

    __tablename__ = "journey_transitions"
    __table_args__ = (
        Index(None, "run_id", "id"),
        Index(None, "journey_id", "to_node", "at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(Integer)
    journey_id: Mapped[int] = mapped_column(BigId)
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("journey_runs.id", ondelete="CASCADE"))
    from_node: Mapped[str | None] = mapped_column(String(64), default=None)
    to_node: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(200), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class JourneyAlert(Base):
    """Something about a journey a person must look at (`alerts.py`): a failure rate over
    its threshold (`node` "") or runs stuck at a node. At most one open alert per journey,
    kind and node (a partial unique index); `detail` holds the latest figures."""

    __tablename__ = "journey_alerts"
    __table_args__ = (
        Index(
            "ix_journey_alerts_open",
            "journey_id",
            "kind",
            "node",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        Index(None, "workspace_id", "state", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(BigId, ForeignKey("journeys.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default="open")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
