"""Tables: journeys (the drawn graph being edited, and where the journey stands) and their
published versions (the graph as published and its compiled plan, never changed after).

A journey is `draft` until first published, then `live`; `paused` stops new entries and
holds runs where they are; `archived` is the end (nothing enters or moves, nothing can be
published). Publishing compiles the draft into a new version, numbered from 1; runs stay on
the version they entered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime


class Journey(Base):
    """A journey, its draft graph and its live version."""

    __tablename__ = "journeys"
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
