"""Un-merging: the exact inverse of a soft merge.

The absorbed profile (with whatever had been merged into it) gets its own pointer back;
timeline rows attributed to the survivor since the merge are re-resolved through their
identities, and so are identities first seen in those events and their trait changes; then both
profiles' traits are folded again from the identify events on their timelines (history holds
only the values that won when written, so it would forget an identify that lost to the merged
side) and the history of imports and API writes, and their computed traits recounted from the
timeline. The pair is then never merged again automatically.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from clarion.core.errors import Conflict, NotFound
from clarion.ingest.internal import is_activity
from clarion.ingest.models import Event
from clarion.profiles import batch, queries, service
from clarion.profiles import computed as computed_traits
from clarion.profiles import traits as trait_rules
from clarion.profiles.identity import Key, identity_keys
from clarion.profiles.models import (
    Profile,
    ProfileEvent,
    ProfileIdentity,
    ProfileMerge,
    TraitChange,
)


async def unmerge(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID, merge_id: int, now: datetime
) -> ProfileMerge:
    """Undo merge `merge_id` of the profile's tree; NotFound / Conflict when it cannot be."""
    root = await queries.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    tree = await queries.tree_ids(session, profile_id=root.id)
    merge = await session.scalar(
        select(ProfileMerge).where(
            ProfileMerge.workspace_id == workspace_id, ProfileMerge.id == merge_id
        )
    )
    if merge is None or not {merge.absorbed_id, merge.survivor_id} & set(tree):
        raise NotFound(f"No merge {merge_id} of profile {profile_id}.")
    if merge.status != "merged" or merge.absorbed_id not in tree:
        raise Conflict(f"Merge {merge_id} is {merge.status}; only a live merge can be undone.")
    lock = batch.is_postgres(session)
    profiles = await batch.load_profiles_closed(session, workspace_id, set(tree), lock=lock)
    side = await _subtree(session, tree, merge)
    for row_id in side:
        profiles[row_id].canonical_id = None if row_id == merge.absorbed_id else merge.absorbed_id
    await session.flush()
    await _reattribute(session, workspace_id, tree, side, merge)
    await _recompute(session, profiles[root.id], [t for t in tree if t not in side], now)
    await _recompute(session, profiles[merge.absorbed_id], sorted(side), now)
    merge.status, merge.undone_at = "unmerged", now
    await session.flush()
    await service.announce_rebuilt(
        session, workspace_id=workspace_id, profile_ids=[root.id, merge.absorbed_id], now=now
    )
    return merge


async def _subtree(
    session: AsyncSession, tree: Sequence[uuid.UUID], merge: ProfileMerge
) -> set[uuid.UUID]:
    """The absorbed profile and everything merged into it before (by the merge records)."""
    records = await session.scalars(
        select(ProfileMerge).where(
            ProfileMerge.status == "merged",
            ProfileMerge.survivor_id.in_(tree),
            ProfileMerge.id != merge.id,
        )
    )
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    for record in records:
        children.setdefault(record.survivor_id, []).append(record.absorbed_id)
    side, stack = set(), [merge.absorbed_id]
    while stack:
        current = stack.pop()
        if current not in side:
            side.add(current)
            stack.extend(children.get(current, []))
    return side


def _keys(event: Event) -> list[Key]:
    keys = identity_keys(
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        traits=event.traits or {},
        with_contacts=event.type == "identify",
    )
    if event.type == "alias" and event.previous_id:
        keys += [("user_id", event.previous_id), ("anonymous_id", event.previous_id)]
    return keys


async def _reattribute(
    session: AsyncSession,
    workspace_id: int,
    tree: Sequence[uuid.UUID],
    side: set[uuid.UUID],
    merge: ProfileMerge,
) -> None:
    """Move the survivor's timeline rows since the merge that belong to the absorbed side."""
    identities = (
        await session.scalars(select(ProfileIdentity).where(ProfileIdentity.profile_id.in_(tree)))
    ).all()
    owner = {(i.kind, i.value): i.profile_id for i in identities}
    by_event: dict[int, list[ProfileIdentity]] = {}
    for identity in identities:
        if identity.event_id is not None and identity.created_at >= merge.created_at:
            by_event.setdefault(identity.event_id, []).append(identity)
    rows = await session.execute(
        select(ProfileEvent, Event)
        .join(Event, Event.id == ProfileEvent.event_id)
        .where(
            ProfileEvent.profile_id.in_([t for t in tree if t not in side]),
            ProfileEvent.applied_at >= merge.created_at,
        )
        .order_by(ProfileEvent.event_id)
    )
    moved: list[int] = []
    for row, event in rows:
        brought = {(i.kind, i.value) for i in by_event.get(event.id, [])}
        # The event goes where the identities it did not bring itself point.
        owners = [owner[k] for k in _keys(event) if k in owner and k not in brought]
        if not owners or owners[0] not in side:
            continue
        row.profile_id = merge.absorbed_id
        moved.append(event.id)
        for identity in by_event.get(event.id, []):
            identity.profile_id = merge.absorbed_id
            owner[(identity.kind, identity.value)] = merge.absorbed_id
    for chunk in (moved[i : i + 500] for i in range(0, len(moved), 500)):
        await session.execute(
            update(TraitChange)
            .where(TraitChange.workspace_id == workspace_id, TraitChange.event_id.in_(chunk))
            .values(profile_id=merge.absorbed_id)
            .execution_options(synchronize_session=False)
        )
    await session.flush()


async def _recompute(
    session: AsyncSession, profile: Profile, members: Sequence[uuid.UUID], now: datetime
) -> None:
    """Fold traits again from every value the members were sent and recount computed traits
    from the timeline."""
    rows = await session.execute(
        select(Event, ProfileEvent.profile_id, ProfileEvent.applied_at)
        .join(ProfileEvent, ProfileEvent.event_id == Event.id)
        .where(ProfileEvent.profile_id.in_(members))
        .order_by(Event.timestamp, Event.id)
    )
    values: list[trait_rules.Recorded] = []
    on_timeline: set[int] = set()
    computed = computed_traits.empty()
    first: datetime | None = None
    last: datetime | None = None
    for event, owner, applied_at in rows:
        on_timeline.add(event.id)
        if not is_activity(event.source_id):
            continue
        seen = computed_traits.Seen(event.type, event.name, event.timestamp, event.properties or {})
        computed_traits.add_event(computed, seen)
        first = event.timestamp if first is None else min(first, event.timestamp)
        last = event.timestamp if last is None else max(last, event.timestamp)
        if event.type == "identify" and event.traits:
            # Every identify counts, also one that lost (or changed nothing) while merged:
            # history records only the values that won at the time.
            arrival = (applied_at, event.id)
            values += [
                trait_rules.Recorded(key, value, event.timestamp, owner == profile.id, arrival)
                for key, value in event.traits.items()
            ]
    changes = await session.scalars(
        select(TraitChange).where(TraitChange.profile_id.in_(members)).order_by(TraitChange.id)
    )
    values += [  # imports and API writes, which have no event
        trait_rules.Recorded(
            c.key, c.new, c.timestamp, c.profile_id == profile.id, (c.recorded_at, c.id)
        )
        for c in changes
        if c.event_id not in on_timeline
    ]
    profile.traits, profile.trait_times = trait_rules.fold(values)
    profile.computed, profile.first_seen_at, profile.last_seen_at = computed, first, last
    profile.updated_at = now
    for name in ("traits", "trait_times", "computed"):
        flag_modified(profile, name)
