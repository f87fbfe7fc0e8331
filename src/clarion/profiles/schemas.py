"""Shapes of the profiles API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clarion.ingest.schemas import EventRead
from clarion.profiles import computed as computed_traits
from clarion.profiles.queries import ProfileView


class IdentityRead(BaseModel):
    """One identifier of a profile."""

    model_config = ConfigDict(from_attributes=True)

    kind: str = Field(description="user_id, anonymous_id, email or phone.")
    value: str


class AccountRead(BaseModel):
    """An account (from `group` calls) the profile belongs to."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    group_id: str
    traits: dict[str, Any]


class MoneyRead(BaseModel):
    """Order money in one currency, in integer minor units."""

    currency: str
    lifetime_value: int
    average_order_value: int
    orders: int


class ComputedRead(BaseModel):
    """Computed traits, maintained per event."""

    first_seen_at: datetime | None
    last_seen_at: datetime | None
    event_counts: dict[str, int] = Field(description="Track events by name.")
    page_views: int
    screen_views: int
    orders: int
    last_order_at: datetime | None
    money: list[MoneyRead]


class ProfileRead(BaseModel):
    """A canonical profile; `merged_ids` are the profiles merged into it."""

    id: uuid.UUID
    traits: dict[str, Any]
    computed: ComputedRead
    identities: list[IdentityRead]
    accounts: list[AccountRead]
    merged_ids: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ProfileView) -> ProfileRead:
        """The answer for one profile view."""
        profile, computed = view.profile, view.profile.computed
        return cls(
            id=profile.id,
            traits=profile.traits,
            computed=ComputedRead(
                first_seen_at=profile.first_seen_at,
                last_seen_at=profile.last_seen_at,
                event_counts=computed["event_counts"],
                page_views=computed["page_views"],
                screen_views=computed["screen_views"],
                orders=computed["orders"],
                last_order_at=computed["last_order_at"],
                money=[MoneyRead(**m) for m in computed_traits.money(computed)],
            ),
            identities=[IdentityRead.model_validate(i) for i in view.identities],
            accounts=[AccountRead.model_validate(a) for a in view.accounts],
            merged_ids=view.merged_ids,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )


class ProfilePage(BaseModel):
    """A page of profiles; pass `next_cursor` back as `cursor` for the next."""

    items: list[ProfileRead]
    next_cursor: str | None


class ProfileEventPage(BaseModel):
    """A page of a profile's events, newest first."""

    items: list[EventRead]
    next_cursor: str | None


class MergeRead(BaseModel):
    """A merge record: merged, unmerged or refused, and why."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    survivor_id: uuid.UUID
    absorbed_id: uuid.UUID
    status: str
    reason: str
    identity_kind: str | None
    identity_value: str | None
    event_id: int | None
    created_at: datetime
    undone_at: datetime | None


class MergePage(BaseModel):
    """Every merge record of a profile, newest first."""

    items: list[MergeRead]


class TraitChangeRead(BaseModel):
    """One change of one trait."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    profile_id: uuid.UUID
    key: str
    old: Any = Field(description="The value before (null when the key was absent).")
    new: Any
    event_id: int | None
    timestamp: datetime
    source: str
    recorded_at: datetime


class TraitChangePage(BaseModel):
    """A page of trait changes, most recent first."""

    items: list[TraitChangeRead]
    next_cursor: str | None


class ImportRowErrorRead(BaseModel):
    """A rejected row of an import: its first line in the file, the column at fault, why."""

    model_config = ConfigDict(from_attributes=True)

    line: int = Field(description="1-based line number in the file (the header is line 1).")
    field: str = Field(description="The header of the column at fault, or `row`.")
    message: str


class ProfileImportRead(BaseModel):
    """What an import did. `errors` lists the first rejected rows, in file order."""

    model_config = ConfigDict(from_attributes=True)

    rows: int = Field(description="Data rows read (blank lines are skipped).")
    created: int
    updated: int
    rejected: int
    errors: list[ImportRowErrorRead]
