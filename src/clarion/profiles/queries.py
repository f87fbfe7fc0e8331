"""Reading profiles: by id or identity, lists, timelines, merges and trait history.

Every read resolves to the canonical profile: a merged-away id answers the profile it was
merged into, and a canonical profile's identities, timeline, history and accounts are those of
every row in its merge tree.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import among, unindexed
from clarion.core.errors import FieldError, InvalidInput, NotFound
from clarion.core.pagination import (
    decode_id_cursor,
    decode_time_id_cursor,
    decode_time_uuid_cursor,
    encode_cursor,
)
from clarion.ingest.models import Event
from clarion.profiles.identity import (
    ANONYMOUS_ID,
    EMAIL,
    PHONE,
    USER_ID,
    normalize_email,
    normalize_phone,
)
from clarion.profiles.models import (
    Account,
    Profile,
    ProfileAccount,
    ProfileEvent,
    ProfileIdentity,
    ProfileMerge,
    TraitChange,
)


@dataclass(frozen=True, slots=True)
class ProfileView:
    """A canonical profile with what its whole merge tree holds."""

    profile: Profile
    merged_ids: list[uuid.UUID]
    identities: list[ProfileIdentity]
    accounts: list[Account]


async def get_profile_or_raise(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID
) -> Profile:
    """The canonical profile `profile_id` is (or was merged into); NotFound otherwise."""
    profile = await session.scalar(
        select(Profile).where(Profile.workspace_id == workspace_id, Profile.id == profile_id)
    )
    if profile is None:
        raise NotFound(f"No profile {profile_id} in this workspace.")
    if profile.canonical_id is not None:
        return await get_profile_or_raise(
            session, workspace_id=workspace_id, profile_id=profile.canonical_id
        )
    return profile


def normalize_identity(kind: str, value: str) -> str:
    """The stored form of an identity value; InvalidInput naming `kind` when malformed."""
    if kind == EMAIL:
        email = normalize_email(value)
        if email is None:
            raise InvalidInput("Not an email address.", errors=[FieldError(kind, "not an email")])
        return email
    if kind == PHONE:
        phone = normalize_phone(value)
        if phone is None:
            raise InvalidInput("Not a phone number.", errors=[FieldError(kind, "not a phone")])
        return phone
    return value


async def identity_values(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID], kind: str
) -> set[str]:
    """The values of the `kind` identities these profile rows own (not those of profiles
    merged into them: pass their ids too)."""
    if not profile_ids:
        return set()
    found = await session.scalars(
        select(ProfileIdentity.value).where(
            ProfileIdentity.workspace_id == workspace_id,
            ProfileIdentity.profile_id.in_(list(profile_ids)),
            ProfileIdentity.kind == kind,
        )
    )
    return set(found.all())


async def get_by_identity(
    session: AsyncSession, *, workspace_id: int, kind: str, value: str
) -> Profile | None:
    """The canonical profile owning an identity (email and phone are normalized first)."""
    owner = await session.scalar(
        select(ProfileIdentity.profile_id).where(
            ProfileIdentity.workspace_id == workspace_id,
            ProfileIdentity.kind == kind,
            ProfileIdentity.value == normalize_identity(kind, value),
        )
    )
    if owner is None:
        return None
    return await get_profile_or_raise(session, workspace_id=workspace_id, profile_id=owner)


async def list_profiles(
    session: AsyncSession, *, workspace_id: int, limit: int, cursor: str | None = None
) -> tuple[Sequence[Profile], str | None]:
    """A page of the workspace's canonical profiles, oldest first, and the next cursor."""
    query = select(Profile).where(
        Profile.workspace_id == workspace_id, Profile.canonical_id.is_(None)
    )
    if cursor is not None:
        created, after = decode_time_uuid_cursor(cursor)
        query = query.where(
            or_(
                Profile.created_at > created,
                and_(Profile.created_at == created, Profile.id > after),
            )
        )
    query = query.order_by(Profile.created_at, Profile.id).limit(limit + 1)
    profiles = (await session.scalars(query)).all()
    if len(profiles) <= limit:
        return profiles, None
    last = profiles[limit - 1]
    return profiles[:limit], encode_cursor(last.created_at.isoformat(), str(last.id))


async def tree_ids(session: AsyncSession, *, profile_id: uuid.UUID) -> list[uuid.UUID]:
    """The canonical profile's id and those of every profile merged into it."""
    merged = await session.scalars(
        select(Profile.id).where(Profile.canonical_id == profile_id).order_by(Profile.id)
    )
    return [profile_id, *merged]


async def view_profiles(session: AsyncSession, profiles: Sequence[Profile]) -> list[ProfileView]:
    """Each canonical profile with its merged ids, identities and accounts (3 queries)."""
    if not profiles:
        return []
    ids = [p.id for p in profiles]
    rows = await session.execute(
        select(Profile.id, Profile.canonical_id).where(Profile.canonical_id.in_(ids))
    )
    canonical_of = {p: p for p in ids}
    merged: dict[uuid.UUID, list[uuid.UUID]] = {p: [] for p in ids}
    for row_id, canonical_id in rows:
        assert canonical_id is not None  # selected by it
        canonical_of[row_id] = canonical_id
        merged[canonical_id].append(row_id)
    identities: dict[uuid.UUID, list[ProfileIdentity]] = {p: [] for p in ids}
    for identity in await session.scalars(
        select(ProfileIdentity)
        .where(ProfileIdentity.profile_id.in_(canonical_of))
        .order_by(ProfileIdentity.kind, ProfileIdentity.value)
    ):
        identities[canonical_of[identity.profile_id]].append(identity)
    accounts: dict[uuid.UUID, dict[uuid.UUID, Account]] = {p: {} for p in ids}
    for profile_id, account in await session.execute(
        select(ProfileAccount.profile_id, Account)
        .join(Account, Account.id == ProfileAccount.account_id)
        .where(ProfileAccount.profile_id.in_(canonical_of))
        .order_by(Account.group_id)
    ):
        accounts[canonical_of[profile_id]][account.id] = account
    return [
        ProfileView(p, sorted(merged[p.id]), identities[p.id], list(accounts[p.id].values()))
        for p in profiles
    ]


async def list_timeline(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    limit: int,
    cursor: str | None = None,
) -> tuple[Sequence[Event], str | None]:
    """A page of the profile's events (its whole merge tree), newest first."""
    profile = await get_profile_or_raise(session, workspace_id=workspace_id, profile_id=profile_id)
    ids = await tree_ids(session, profile_id=profile.id)
    query = (
        select(Event)
        .join(ProfileEvent, ProfileEvent.event_id == Event.id)
        .where(ProfileEvent.profile_id.in_(ids), Event.workspace_id == workspace_id)
    )
    if cursor is not None:
        moment, after = decode_time_id_cursor(cursor)
        query = query.where(
            or_(
                ProfileEvent.timestamp < moment,
                and_(ProfileEvent.timestamp == moment, ProfileEvent.event_id < after),
            )
        )
    query = query.order_by(ProfileEvent.timestamp.desc(), ProfileEvent.event_id.desc())
    events = (await session.scalars(query.limit(limit + 1))).all()
    if len(events) <= limit:
        return events, None
    last = events[limit - 1]
    return events[:limit], encode_cursor(last.timestamp.isoformat(), last.id)


async def list_merges(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID
) -> Sequence[ProfileMerge]:
    """Every merge record (merged, unmerged, refused) involving the profile's tree, newest first."""
    profile = await get_profile_or_raise(session, workspace_id=workspace_id, profile_id=profile_id)
    ids = await tree_ids(session, profile_id=profile.id)
    query = (
        select(ProfileMerge)
        .where(
            ProfileMerge.workspace_id == workspace_id,
            or_(ProfileMerge.survivor_id.in_(ids), ProfileMerge.absorbed_id.in_(ids)),
        )
        .order_by(ProfileMerge.id.desc())
    )
    return (await session.scalars(query)).all()


async def list_trait_history(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    key: str | None,
    limit: int,
    cursor: str | None = None,
) -> tuple[Sequence[TraitChange], str | None]:
    """A page of the trait changes of the profile's tree, most recently recorded first."""
    profile = await get_profile_or_raise(session, workspace_id=workspace_id, profile_id=profile_id)
    ids = await tree_ids(session, profile_id=profile.id)
    query = select(TraitChange).where(TraitChange.profile_id.in_(ids))
    if key is not None:
        query = query.where(TraitChange.key == key)
    if cursor is not None:
        query = query.where(TraitChange.id < decode_id_cursor(cursor))
    changes = (await session.scalars(query.order_by(TraitChange.id.desc()).limit(limit + 1))).all()
    if len(changes) <= limit:
        return changes, None
    return changes[:limit], encode_cursor(changes[limit - 1].id)


class TrackedEvent(NamedTuple):
    """A track event on a profile's timeline, as later stages (segments) read it (a named
    tuple: made for every event of every timeline a first touch rebuilds)."""

    event_id: int
    name: str
    timestamp: datetime
    properties: dict[str, Any]


async def canonical_ids(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """For each of `profile_ids`, the canonical profile it is or was merged into (one
    query); ids of no profile of the workspace are left out."""
    if not profile_ids:
        return {}
    rows = await session.execute(
        select(Profile.id, Profile.canonical_id).where(
            unindexed(Profile.workspace_id) == workspace_id, Profile.id.in_(profile_ids)
        )
    )
    return {row_id: canonical or row_id for row_id, canonical in rows}


async def traits_by_id(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """For each of `profile_ids`, the traits of the canonical profile it is (or was merged
    into); ids of no profile of the workspace are left out. Reads only."""
    canonical_of = await canonical_ids(session, workspace_id=workspace_id, profile_ids=profile_ids)
    if not canonical_of:
        return {}
    rows = await session.execute(
        select(Profile.id, Profile.traits).where(Profile.id.in_(set(canonical_of.values())))
    )
    traits = {profile_id: found or {} for profile_id, found in rows}
    return {
        asked: traits[canonical] for asked, canonical in canonical_of.items() if canonical in traits
    }


async def views_by_id(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, ProfileView]:
    """For each of `profile_ids`, the canonical profile it is (or was merged into) as a
    view; ids of no profile of the workspace are left out. Reads only: nothing is locked."""
    canonical_of = await canonical_ids(session, workspace_id=workspace_id, profile_ids=profile_ids)
    if not canonical_of:
        return {}
    profiles = await session.scalars(
        select(Profile).where(
            unindexed(Profile.workspace_id) == workspace_id,
            Profile.id.in_(set(canonical_of.values())),
        )
    )
    views = {view.profile.id: view for view in await view_profiles(session, list(profiles))}
    return {
        asked: views[canonical] for asked, canonical in canonical_of.items() if canonical in views
    }


@dataclass(frozen=True, slots=True)
class ProfileSnapshot:
    """A canonical profile as segments read it: no ORM object behind it."""

    id: uuid.UUID
    traits: dict[str, Any]
    computed: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None


async def canonical_profiles(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> list[ProfileSnapshot]:
    """The canonical profiles among `profile_ids` (merged-away ids are left out), in id
    order; on PostgreSQL locked FOR UPDATE, so concurrent writers of a profile take turns."""
    if not profile_ids:
        return []
    query = (
        select(
            Profile.id,
            Profile.traits,
            Profile.computed,
            Profile.first_seen_at,
            Profile.last_seen_at,
        )
        .where(
            unindexed(Profile.workspace_id) == workspace_id,
            among(session, Profile.id, profile_ids),
            Profile.canonical_id.is_(None),
        )
        .order_by(Profile.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return [
        ProfileSnapshot(row[0], row[1] or {}, row[2] or {}, row[3], row[4])
        for row in await session.execute(query)
    ]


async def _trees(
    session: AsyncSession, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Every profile row of the canonical profiles' merge trees, with its canonical profile:
    the canonical rows by primary key, the merged ones through `canonical_id`'s index."""
    rows = await session.execute(
        select(Profile.id, Profile.canonical_id).where(
            unindexed(Profile.workspace_id) == workspace_id,
            or_(
                among(session, Profile.id, profile_ids),
                among(session, Profile.canonical_id, profile_ids),
            ),
        )
    )
    wanted = set(profile_ids)
    return {
        row_id: canonical or row_id for row_id, canonical in rows if (canonical or row_id) in wanted
    }


async def sender_ids(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[str | None, str | None]]:
    """Per canonical profile, a user id and an anonymous id of its merge tree (either may
    be None): what a message about the profile is sent as, so that it resolves back to it."""
    found: dict[uuid.UUID, tuple[str | None, str | None]] = {}
    if not profile_ids:
        return found
    trees = await _trees(session, workspace_id, profile_ids)
    rows = await session.execute(
        select(ProfileIdentity.profile_id, ProfileIdentity.kind, ProfileIdentity.value)
        .where(
            among(session, ProfileIdentity.profile_id, trees),
            ProfileIdentity.kind.in_((USER_ID, ANONYMOUS_ID)),
        )
        .order_by(ProfileIdentity.id)
    )
    for row_id, kind, value in rows:
        canonical = trees[row_id]
        user_id, anonymous_id = found.get(canonical, (None, None))
        if kind == USER_ID and user_id is None:
            user_id = value
        elif kind == ANONYMOUS_ID and anonymous_id is None:
            anonymous_id = value
        found[canonical] = (user_id, anonymous_id)
    return found


async def tracked_events(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_ids: Sequence[uuid.UUID],
    names: Collection[str] | None = None,
) -> dict[uuid.UUID, list[TrackedEvent]]:
    """The track events on the timelines of the canonical profiles' merge trees (only
    those named in `names`, when given), by canonical profile, oldest first."""
    found: dict[uuid.UUID, list[TrackedEvent]] = {profile_id: [] for profile_id in profile_ids}
    if not profile_ids or (names is not None and not names):
        return found
    trees = await _trees(session, workspace_id, profile_ids)
    # Timeline rows by their profile index, events by primary key: never a scan of the log.
    if session.get_bind().dialect.name == "postgresql":
        # Each row's event looked up by its key alone, the filters applied after (a LATERAL
        # subquery behind OFFSET 0, which the planner cannot see through): with no
        # statistics yet (a table just filled) it otherwise took the filters for a few
        # rows and scanned the log (6.6 s for 20 profiles), or the workspace's index.
        event = (
            select(
                Event.id,
                Event.name,
                Event.timestamp,
                Event.properties,
                Event.workspace_id,
                Event.type,
            )
            .where(Event.id == ProfileEvent.event_id)
            .offset(0)
            .lateral("event")
        )
        query = (
            select(
                ProfileEvent.profile_id,
                event.c.id,
                event.c.name,
                event.c.timestamp,
                event.c.properties,
            )
            .join_from(ProfileEvent, event, true())
            .where(event.c.workspace_id == workspace_id, event.c.type == "track")
        )
        if names is not None:
            query = query.where(event.c.name.in_(sorted(names)))
    else:
        query = (
            select(ProfileEvent.profile_id, Event.id, Event.name, Event.timestamp, Event.properties)
            .join(Event, Event.id == ProfileEvent.event_id)
            .where(Event.workspace_id == workspace_id, Event.type == "track")
        )
        if names is not None:
            query = query.where(Event.name.in_(sorted(names)))
    rows = await session.execute(query.where(among(session, ProfileEvent.profile_id, trees)))
    for row_id, event_id, name, timestamp, properties in rows:
        found[trees[row_id]].append(TrackedEvent(event_id, name or "", timestamp, properties or {}))
    for events in found.values():
        events.sort(key=lambda event: (event.timestamp, event.event_id))
    return found


async def with_trait(
    session: AsyncSession, *, workspace_id: int, trait: str, page: int = 5_000
) -> AsyncIterator[list[tuple[uuid.UUID, Any, Any]]]:
    """The canonical profiles holding `trait`, in pages of (profile id, the trait's value,
    the `timezone` trait's value)."""
    after: uuid.UUID | None = None
    while True:
        query = (
            select(Profile.id, Profile.traits)
            .where(Profile.workspace_id == workspace_id, Profile.canonical_id.is_(None))
            .order_by(Profile.id)
            .limit(page)
        )
        if after is not None:
            query = query.where(Profile.id > after)
        rows = (await session.execute(query)).all()
        if not rows:
            return
        found = [
            (profile_id, traits.get(trait), traits.get("timezone"))
            for profile_id, traits in rows
            if isinstance(traits, dict) and traits.get(trait) is not None
        ]
        if found:
            yield found
        after = rows[-1][0]
