"""Erasing a person (GDPR's right to erasure, CCPA's right to delete): the canonical profile,
every profile merged into it, and everything Clarion knows about them, in the caller's
transaction.

What goes, and how:
- profiles' own rows (identities, timeline, trait history, merge records, account links) are
  deleted here, then the profile rows themselves;
- the person's events (found through the timeline, before it goes) are deleted by ingest,
  with the tracking plan violations recorded about them;
- rows of later domains keyed by a profile without a foreign key (segment memberships and
  their history) are erased by the `ProfileEraser`s the caller passes (`app.py` wires
  segments'); profiles never imports them;
- rows of later domains with a foreign key to the profile (messages and their events,
  consents, campaign recipients, journey runs and their transitions, kept segment state)
  go with it: `ON DELETE CASCADE`, on SQLite too (`PRAGMA foreign_keys=ON`).

Suppressed addresses stay: they keep the address from being mailed again. Accounts (groups)
stay: others may belong to them. Events not on the timeline when the erasure runs (accepted
but not processed yet, or blocked by a tracking plan) are not found: a client must stop
sending about the person first. No `Segment Exited` or other event is emitted: nobody is
left for a journey to act on. The erasure is logged without personal data: the profile id
and how many rows of each kind went.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import unindexed
from clarion.core.errors import Conflict
from clarion.ingest import service as events
from clarion.profiles.models import (
    Profile,
    ProfileAccount,
    ProfileEvent,
    ProfileIdentity,
    ProfileMerge,
    TraitChange,
)
from clarion.profiles.queries import get_profile_or_raise

log = logging.getLogger(__name__)

# Erases what a downstream domain keeps about these profile rows (a canonical profile and
# those merged into it) without a foreign key to them: (session, workspace id, profile ids)
# -> rows removed, by what they were. Flushes only. `app.py` passes them in.
ProfileEraser = Callable[[AsyncSession, int, Sequence[uuid.UUID]], Awaitable[Mapping[str, int]]]
ProfileErasers = Sequence[ProfileEraser]

# A profile merged into another between finding the person and locking them is looked up
# again this many times.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure removed: the canonical profile, the profiles merged into it, and
    how many rows of each kind (those removed by a cascade are not counted)."""

    workspace_id: int
    profile_id: uuid.UUID
    merged_ids: list[uuid.UUID]
    removed: dict[str, int] = field(default_factory=dict)


async def delete_profile(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    erasers: ProfileErasers = (),
) -> Erasure:
    """Erase the person `profile_id` is (a merged-away id: the profile it was merged
    into) with everything known about them; NotFound when no such profile is in the
    workspace. Flushes, never commits: the caller commits the whole erasure at once."""
    tree = await _lock_tree(session, workspace_id, profile_id)
    canonical, merged = tree[0], tree[1:]
    removed: dict[str, int] = {}
    event_ids = (
        await session.scalars(
            select(ProfileEvent.event_id).where(ProfileEvent.profile_id.in_(tree))
        )
    ).all()
    for erase in erasers:
        for kind, count in (await erase(session, workspace_id, tree)).items():
            removed[kind] = removed.get(kind, 0) + count
    removed["events"] = await events.delete_events(
        session, workspace_id=workspace_id, event_ids=event_ids
    )
    owned: list[tuple[str, Delete]] = [
        ("timeline_entries", delete(ProfileEvent).where(ProfileEvent.profile_id.in_(tree))),
        ("identities", delete(ProfileIdentity).where(ProfileIdentity.profile_id.in_(tree))),
        ("trait_changes", delete(TraitChange).where(TraitChange.profile_id.in_(tree))),
        (
            "merge_records",
            delete(ProfileMerge).where(
                or_(ProfileMerge.survivor_id.in_(tree), ProfileMerge.absorbed_id.in_(tree))
            ),
        ),
        ("account_links", delete(ProfileAccount).where(ProfileAccount.profile_id.in_(tree))),
        # The merged rows before the one they point at (`canonical_id` has no cascade).
        ("profiles", delete(Profile).where(Profile.id.in_(merged))),
    ]
    for kind, statement in owned:
        removed[kind] = await _deleted(session, statement)
    removed["profiles"] += await _deleted(session, delete(Profile).where(Profile.id == canonical))
    await session.flush()
    log.info(
        "erased profile %s of workspace %s with %d merged into it; rows removed: %s",
        canonical,
        workspace_id,
        len(merged),
        ", ".join(f"{kind}={count}" for kind, count in sorted(removed.items())),
    )
    return Erasure(workspace_id, canonical, list(merged), removed)


async def _lock_tree(
    session: AsyncSession, workspace_id: int, profile_id: uuid.UUID
) -> list[uuid.UUID]:
    """The canonical profile's id, then those of the profiles merged into it (in id order),
    locked on PostgreSQL in id order as every writer of profiles locks them. A profile
    merged into the tree (or the tree merged away) while the locks were awaited shows in a
    second read: the person is then looked up again.

    `FOR NO KEY UPDATE` still waits for (and holds off) every writer of the profile rows,
    but not a transaction adding a row that refers to one (a message, a journey run): the
    erasure's DELETE waits for it to end and its cascade takes that row too, where a full
    lock would have had that writer fail on a missing profile, or deadlock with it."""
    postgres = session.get_bind().dialect.name == "postgresql"
    for _ in range(_ATTEMPTS):
        found = await get_profile_or_raise(
            session, workspace_id=workspace_id, profile_id=profile_id
        )
        canonical = found.id
        tree = (
            select(Profile.id, Profile.canonical_id)
            .where(
                unindexed(Profile.workspace_id) == workspace_id,
                or_(Profile.id == canonical, Profile.canonical_id == canonical),
            )
            .order_by(Profile.id)
        )
        locked = {
            (row[0], row[1])
            for row in await session.execute(
                tree.with_for_update(key_share=True) if postgres else tree
            )
        }
        again = {(row[0], row[1]) for row in await session.execute(tree)} if postgres else locked
        if locked == again and (canonical, None) in again:
            return [canonical, *sorted(row_id for row_id, _ in again if row_id != canonical)]
        session.expire_all()
    raise Conflict(f"Profile {profile_id} kept being merged while it was erased; try again.")


async def _deleted(session: AsyncSession, statement: Delete) -> int:
    """Run a DELETE; how many rows it removed."""
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(cast(CursorResult[Any], result).rowcount)
