"""Erasing a person (GDPR's right to erasure, CCPA's right to delete): the canonical profile,
every profile merged into it, and everything Clarion knows about them, in the caller's
transaction.

What goes, and how:
- profiles' own rows (identities, trait history, merge records, account links) are deleted
  here, then the profile rows themselves, then the timeline: deleting the profiles waits
  for every transaction holding them, as whatever stores events about a person does
  (`apply_own_events`, the pipeline's locks), so a `Segment Entered` or a delivery's
  feedback stored meanwhile goes too, and none can follow;
- the person's events (found through the timeline, before it goes) are deleted by ingest,
  with the tracking plan violations recorded about them;
- rows of later domains keyed by a profile without a foreign key (segment memberships and
  their history, campaigns' list audiences) are erased by the `ProfileEraser`s the caller
  passes (`clarion.erasers.PROFILE_ERASERS`, for the API and the command); profiles never
  imports them;
- rows of later domains with a foreign key to the profile (messages and their events,
  consents, campaign recipients, journey runs and their transitions, kept segment state)
  go with it: `ON DELETE CASCADE`, on SQLite too (`PRAGMA foreign_keys=ON`); each of those
  tables is indexed by `profile_id` first (migration 0018), or each cascade reads it whole.

Suppressed addresses stay: they keep the address from being mailed again. Asked to
(`KeepOut`, as Segment's SUPPRESS_WITH_DELETE), the erasure first puts every email and
phone the person is known by (identities, and the `email` / `phone` traits messages go to)
on the suppression list with reason `erased`, through messaging's `suppress` that the caller
passes in (profiles never imports messaging): a profile later made with the same address is
never messaged. A plain erasure adds nothing to the list. Accounts (groups) stay: others may
belong to them. Events not on the timeline when the erasure runs (accepted but not
processed yet, or blocked by a tracking plan) are not found: a client must stop sending
about the person first. No `Segment Exited` or other event is emitted: nobody is left for
a journey to act on. The erasure is logged without personal data: the profile id
and how many rows of each kind went.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Delete, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import unindexed
from clarion.core.errors import Conflict, InvalidInput
from clarion.ingest import service as events
from clarion.profiles.identity import EMAIL, PHONE, normalize_email, normalize_phone
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
# -> rows removed, by what they were. Flushes only. `clarion.erasers` lists them.
ProfileEraser = Callable[[AsyncSession, int, Sequence[uuid.UUID]], Awaitable[Mapping[str, int]]]
ProfileErasers = Sequence[ProfileEraser]

# A profile merged into another between finding the person and locking them is looked up
# again this many times.
_ATTEMPTS = 3
# The messaging channel each address-like identity (and trait of that name) is an address
# of, and how an erasure's suppressions read on the list: reason `erased` (a send to the
# address is refused `suppressed:erased`), and no detail, which would only repeat it.
_CHANNELS = {EMAIL: "email", PHONE: "sms"}
_NORMALIZE = {EMAIL: normalize_email, PHONE: normalize_phone}
SUPPRESSION_REASON, SUPPRESSION_DETAIL = "erased", ""


class AddressSuppressor(Protocol):
    """Messaging's `suppressions.suppress`: puts an address on a channel's suppression
    list, True when it was not on it; InvalidInput when the list cannot hold it."""

    def __call__(
        self,
        session: AsyncSession,
        *,
        workspace_id: int,
        channel: str,
        address: str,
        reason: str,
        detail: str,
        now: datetime,
    ) -> Awaitable[bool]: ...


@dataclass(frozen=True, slots=True)
class KeepOut:
    """Erase, and keep the person's addresses from being messaged again: each goes on the
    suppression list through `suppress`, stamped `now`, in the erasure's transaction."""

    suppress: AddressSuppressor
    now: datetime


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure removed: the canonical profile, the profiles merged into it, and
    how many rows of each kind (those removed by a cascade are not counted), and how many
    of their addresses went on the suppression list (`KeepOut`; those already on it are
    not counted)."""

    workspace_id: int
    profile_id: uuid.UUID
    merged_ids: list[uuid.UUID]
    removed: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0


async def delete_profile(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    erasers: ProfileErasers = (),
    keep_out: KeepOut | None = None,
) -> Erasure:
    """Erase the person `profile_id` is (a merged-away id: the profile it was merged
    into) with everything known about them, with `keep_out` suppressing their addresses
    first; NotFound when no such profile is in the workspace. Flushes, never commits: the
    caller commits the whole erasure at once."""
    tree = await _lock_tree(session, workspace_id, profile_id)
    canonical, merged = tree[0], tree[1:]
    suppressed = 0 if keep_out is None else await _suppress(session, workspace_id, tree, keep_out)
    removed: dict[str, int] = {}
    for erase in erasers:
        for kind, count in (await erase(session, workspace_id, tree)).items():
            removed[kind] = removed.get(kind, 0) + count
    owned: list[tuple[str, Delete]] = [
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
    # The timeline last: deleting the profiles waited for every transaction holding them
    # (what stores events about them holds them, `apply_own_events`), so what those wrote
    # is seen from here on, and nothing can be added about them any more.
    event_ids = (
        await session.scalars(
            select(ProfileEvent.event_id).where(ProfileEvent.profile_id.in_(tree))
        )
    ).all()
    removed["events"] = await events.delete_events(
        session, workspace_id=workspace_id, event_ids=event_ids
    )
    removed["timeline_entries"] = await _deleted(
        session, delete(ProfileEvent).where(ProfileEvent.profile_id.in_(tree))
    )
    await session.flush()
    log.info(
        "erased profile %s of workspace %s with %d merged into it; rows removed: %s%s",
        canonical,
        workspace_id,
        len(merged),
        ", ".join(f"{kind}={count}" for kind, count in sorted(removed.items())),
        "" if keep_out is None else f"; addresses suppressed: {suppressed}",
    )
    return Erasure(workspace_id, canonical, list(merged), removed, suppressed)


async def _suppress(
    session: AsyncSession, workspace_id: int, tree: Sequence[uuid.UUID], keep_out: KeepOut
) -> int:
    """Put every email and phone of the tree's profiles (identities, and the `email` and
    `phone` traits a message would go to) on the suppression list; how many were not on
    it. An address the list cannot hold (an identity no channel could send to) is passed
    over: nothing could be sent to it either."""
    found = await session.execute(
        select(ProfileIdentity.kind, ProfileIdentity.value).where(
            ProfileIdentity.profile_id.in_(tree), ProfileIdentity.kind.in_(_CHANNELS)
        )
    )
    addresses = {(_CHANNELS[kind], value) for kind, value in found}
    for traits in await session.scalars(select(Profile.traits).where(Profile.id.in_(tree))):
        for kind, normalize in _NORMALIZE.items():
            value = normalize(traits.get(kind))
            if value is not None:
                addresses.add((_CHANNELS[kind], value))
    added = 0
    # In one order: two erasures sharing an address wait for each other, never deadlock.
    for channel, address in sorted(addresses):
        with contextlib.suppress(InvalidInput):
            added += await keep_out.suppress(
                session,
                workspace_id=workspace_id,
                channel=channel,
                address=address,
                reason=SUPPRESSION_REASON,
                detail=SUPPRESSION_DETAIL,
                now=keep_out.now,
            )
    return added


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
