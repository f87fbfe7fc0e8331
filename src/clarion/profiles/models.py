"""Tables: profiles, their identities, timeline, trait history, merges and accounts.

Merges are soft: an absorbed profile keeps its row and its identities and points at the
survivor through `canonical_id` (chains are flattened, so it is always one hop), which is
what makes an un-merge exact. Readers resolve every profile id to its canonical profile.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.ingest import models as _ingest  # noqa: F401 - the events table timelines are read with


class Profile(Base):
    """One customer. `canonical_id` is null for a live profile, the survivor's id once merged.

    `traits` holds the effective traits (of the whole merge tree on a canonical profile),
    `trait_times` the event timestamp that set each key (latest wins), `computed` the computed
    traits maintained per event (see `computed.py`).
    """

    __tablename__ = "profiles"
    __table_args__ = (
        Index(None, "workspace_id", "created_at", "id"),
        # Merged-away rows only: the index stays small, and a lookup by canonical id
        # (which implies NOT NULL) is known to be selective on both databases.
        Index(
            "ix_profiles_canonical_id",
            "canonical_id",
            sqlite_where=text("canonical_id IS NOT NULL"),
            postgresql_where=text("canonical_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    canonical_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("profiles.id"), default=None)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    trait_times: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    computed: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    first_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProfileIdentity(Base):
    """An identifier (user_id, anonymous_id, email or phone) owned by exactly one profile row.

    It stays on the profile it was first attached to, even after that profile is merged away.
    """

    __tablename__ = "profile_identities"
    __table_args__ = (
        Index(None, "workspace_id", "kind", "value", unique=True),
        Index(None, "profile_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    profile_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    # The event that brought it, so an un-merge can send it back where it came from.
    event_id: Mapped[int | None] = mapped_column(BigId, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProfileEvent(Base):
    """The timeline index: which profile row an event was attributed to (one per event).

    No foreign keys: each costs a lookup per row written (migrations 0012 and 0021). Every
    writer holds the profiles it writes for until it commits (the pipeline locks them,
    `apply_own_events` holds them), and a person's erasure deletes their rows after their
    profiles; workspaces are never deleted by Clarion."""

    __tablename__ = "profile_events"
    __table_args__ = (
        Index(None, "workspace_id", "event_id", unique=True),
        Index(None, "profile_id", "timestamp", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_id: Mapped[int] = mapped_column(BigId)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TraitChange(Base):
    """One change of one trait of one profile row: the trait history.

    Values are stored wrapped as `{"v": value}`: SQLite would read a bare JSON scalar such as
    `30` back as a number column, not as JSON.
    """

    __tablename__ = "profile_trait_changes"
    __table_args__ = (Index(None, "profile_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    profile_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    old_value: Mapped[Any] = mapped_column(JSONDocument, nullable=True, default=None)
    new_value: Mapped[Any] = mapped_column(JSONDocument, nullable=True, default=None)
    event_id: Mapped[int | None] = mapped_column(BigId)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def old(self) -> Any:
        """The value before the change (None when the key was absent)."""
        return (self.old_value or {}).get("v")

    @property
    def new(self) -> Any:
        """The value after the change."""
        return (self.new_value or {}).get("v")


class ProfileMerge(Base):
    """A merge of `absorbed_id` into `survivor_id`: merged, unmerged, or refused (and why)."""

    __tablename__ = "profile_merges"
    __table_args__ = (
        Index(None, "survivor_id", "id"),
        Index(None, "absorbed_id", "id"),
        Index(None, "workspace_id", "identity_kind", "identity_value"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    survivor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    absorbed_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    identity_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    identity_value: Mapped[str | None] = mapped_column(String(255), default=None)
    event_id: Mapped[int | None] = mapped_column(BigId, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Account(Base):
    """A group (company, household) from `group` calls: one per workspace and group_id."""

    __tablename__ = "accounts"
    __table_args__ = (Index(None, "workspace_id", "group_id", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    group_id: Mapped[str] = mapped_column(String(255))
    traits: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    trait_times: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProfileAccount(Base):
    """A profile row's membership of an account."""

    __tablename__ = "profile_accounts"
    __table_args__ = (Index(None, "account_id"),)

    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
