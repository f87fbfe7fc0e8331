"""Loading a batch's identity graph (locking it on PostgreSQL) and writing its outcome.

Everything a batch touches is read in a few queries, resolved in memory (`identity.Graph`),
and written once: each profile row one UPDATE, identities, timeline rows and trait history in
bulk INSERTs. On PostgreSQL the batch first takes transaction advisory locks on its identity
keys and then row locks on every profile it reached, each in sorted order, so two workers
sharing profiles queue instead of interleaving; a deadlock or a lost race raises, the
transaction rolls back and the caller's job retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from clarion.core.errors import Conflict
from clarion.profiles.identity import ANONYMOUS_ID, USER_ID, Graph, Key
from clarion.profiles.models import (
    Account,
    Profile,
    ProfileAccount,
    ProfileEvent,
    ProfileIdentity,
    ProfileMerge,
    TraitChange,
)
from clarion.profiles.traits import Change

MAX_LOCK_HOPS = 4


def is_postgres(session: AsyncSession) -> bool:
    """Whether the session talks to PostgreSQL."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _insert(session: AsyncSession, table: Any) -> Any:
    module = postgresql if is_postgres(session) else sqlite
    return module.insert(table)


async def _lock_keys(session: AsyncSession, workspace_id: int, keys: Iterable[Key]) -> None:
    names = sorted({f"{kind}:{value}" for kind, value in keys})
    if not names:
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT"
            " hashtextextended(k, :ws) AS h FROM unnest(CAST(:keys AS text[])) AS k"
            " ORDER BY 1) AS sorted_keys"
        ),
        {"ws": workspace_id, "keys": names},
    )


async def _load_profiles(
    session: AsyncSession, workspace_id: int, ids: set[uuid.UUID], *, lock: bool
) -> dict[uuid.UUID, Profile]:
    if not ids:
        return {}
    query = (
        select(Profile)
        .where(Profile.workspace_id == workspace_id, Profile.id.in_(ids))
        .order_by(Profile.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    return {p.id: p for p in (await session.scalars(query)).all()}


async def load_profiles_closed(
    session: AsyncSession, workspace_id: int, ids: set[uuid.UUID], *, lock: bool
) -> dict[uuid.UUID, Profile]:
    """The profiles `ids` and, hop by hop, the canonical ones they point at (locked)."""
    profiles: dict[uuid.UUID, Profile] = {}
    wanted = set(ids)
    for _ in range(MAX_LOCK_HOPS):
        profiles |= await _load_profiles(session, workspace_id, wanted - profiles.keys(), lock=lock)
        wanted = {p.canonical_id for p in profiles.values() if p.canonical_id} - profiles.keys()
        if not wanted:
            return profiles
    raise Conflict("Profiles were merged concurrently; retry the batch.")


async def load_graph(
    session: AsyncSession, *, workspace_id: int, keys: set[Key], now: datetime
) -> Graph:
    """The identity graph around `keys`, locked on PostgreSQL."""
    lock = is_postgres(session)
    if lock:
        await _lock_keys(session, workspace_id, keys)
    owner: dict[Key, uuid.UUID] = {}
    values = sorted({value for _, value in keys})
    for chunk in _chunks(values):
        rows = await session.execute(
            select(ProfileIdentity.kind, ProfileIdentity.value, ProfileIdentity.profile_id).where(
                ProfileIdentity.workspace_id == workspace_id, ProfileIdentity.value.in_(chunk)
            )
        )
        owner |= {(k, v): pid for k, v, pid in rows if (k, v) in keys}
    profiles = await load_profiles_closed(session, workspace_id, set(owner.values()), lock=lock)
    canonical = {p.canonical_id or p.id for p in profiles.values()}
    graph = Graph(
        workspace_id=workspace_id,
        now=now,
        profiles=profiles,
        owner=owner,
        user_ids=await tree_user_ids(session, canonical),
        blocked=set(),
        refused_with={},
    )
    anonymous = [value for kind, value in keys if kind == ANONYMOUS_ID]
    await _load_blocked(session, graph, set(profiles), anonymous)
    return graph


async def tree_user_ids(
    session: AsyncSession, canonical: set[uuid.UUID]
) -> dict[uuid.UUID, set[str]]:
    """The user ids held anywhere in each canonical profile's merge tree."""
    found: dict[uuid.UUID, set[str]] = {c: set() for c in canonical}
    if not canonical:
        return found
    rows = await session.execute(
        select(ProfileIdentity.value, Profile.id, Profile.canonical_id)
        .join(Profile, Profile.id == ProfileIdentity.profile_id)
        .where(
            ProfileIdentity.kind == USER_ID,
            or_(Profile.id.in_(canonical), Profile.canonical_id.in_(canonical)),
        )
    )
    for value, profile_id, canonical_id in rows:
        found.setdefault(canonical_id or profile_id, set()).add(value)
    return found


async def _load_blocked(
    session: AsyncSession, graph: Graph, ids: set[uuid.UUID], anonymous: list[str]
) -> None:
    if not ids and not anonymous:
        return
    conditions: list[ColumnElement[bool]] = [
        ProfileMerge.survivor_id.in_(ids),
        ProfileMerge.absorbed_id.in_(ids),
    ]
    if anonymous:
        conditions.append(
            and_(
                ProfileMerge.identity_kind == ANONYMOUS_ID,
                ProfileMerge.identity_value.in_(anonymous),
            )
        )
    rows = await session.scalars(
        select(ProfileMerge).where(
            ProfileMerge.workspace_id == graph.workspace_id,
            ProfileMerge.status.in_(("refused", "unmerged")),
            or_(*conditions),
        )
    )

    def canon(profile_id: uuid.UUID) -> uuid.UUID:
        return graph.canonical(profile_id) if profile_id in graph.profiles else profile_id

    for merge in rows:
        graph.blocked.add(frozenset((canon(merge.survivor_id), canon(merge.absorbed_id))))
        if merge.status == "refused" and merge.identity_kind == ANONYMOUS_ID:
            value = merge.identity_value or ""
            graph.refused_with.setdefault(value, set()).add(merge.survivor_id)


async def applied_event_ids(
    session: AsyncSession, *, workspace_id: int, event_ids: Sequence[int]
) -> set[int]:
    """Which of `event_ids` are already on a timeline (applied before)."""
    found: set[int] = set()
    for chunk in _chunks(sorted(set(event_ids))):
        rows = await session.scalars(
            select(ProfileEvent.event_id).where(
                ProfileEvent.workspace_id == workspace_id, ProfileEvent.event_id.in_(chunk)
            )
        )
        found |= set(rows)
    return found


async def load_accounts(
    session: AsyncSession, *, workspace_id: int, group_ids: set[str]
) -> dict[str, Account]:
    """The workspace's accounts with these group ids (locked on PostgreSQL)."""
    if not group_ids:
        return {}
    query = select(Account).where(
        Account.workspace_id == workspace_id, Account.group_id.in_(sorted(group_ids))
    )
    if is_postgres(session):
        query = query.order_by(Account.id).with_for_update()
    return {a.group_id: a for a in (await session.scalars(query)).all()}


async def write_graph(session: AsyncSession, graph: Graph) -> None:
    """Write what resolution changed: profiles, identities, merges, flattened pointers."""
    session.add_all(graph.new_profiles)
    for profile_id in graph.touched:
        profile = graph.profiles[profile_id]
        for name in ("traits", "trait_times", "computed"):
            flag_modified(profile, name)
    await session.flush()
    for absorbed, survivor in graph.flattened:
        await session.execute(
            update(Profile)
            .where(Profile.workspace_id == graph.workspace_id, Profile.canonical_id == absorbed)
            .values(canonical_id=survivor, updated_at=graph.now)
            .execution_options(synchronize_session=False)
        )
    if graph.new_identities:
        rows = [
            {
                "workspace_id": graph.workspace_id,
                "profile_id": new.profile_id,
                "kind": new.key[0],
                "value": new.key[1],
                "event_id": new.event_id,
                "created_at": graph.now,
            }
            for new in graph.new_identities
        ]
        await _insert_identities(session, rows)
    session.add_all(graph.merges)
    await session.flush()


async def _insert_identities(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    before = await session.scalar(
        select(func.count())
        .select_from(ProfileIdentity)
        .where(
            ProfileIdentity.workspace_id == rows[0]["workspace_id"],
            ProfileIdentity.value.in_([r["value"] for r in rows]),
        )
    )
    statement = _insert(session, ProfileIdentity).on_conflict_do_nothing()
    await session.execute(statement, rows)
    after = await session.scalar(
        select(func.count())
        .select_from(ProfileIdentity)
        .where(
            ProfileIdentity.workspace_id == rows[0]["workspace_id"],
            ProfileIdentity.value.in_([r["value"] for r in rows]),
        )
    )
    if (after or 0) - (before or 0) != len(rows):
        # Another transaction claimed one of these identities first: start the batch again.
        raise Conflict("A profile identity was claimed concurrently; retry the batch.")


async def write_rows(
    session: AsyncSession,
    *,
    workspace_id: int,
    now: datetime,
    timeline: list[dict[str, Any]],
    changes: list[Change],
    links: set[tuple[uuid.UUID, uuid.UUID]],
) -> None:
    """Bulk-insert timeline rows, trait history and account links."""
    if timeline:
        await session.execute(_insert(session, ProfileEvent), timeline)
    if changes:
        await session.execute(
            _insert(session, TraitChange),
            [
                {
                    "workspace_id": workspace_id,
                    "profile_id": c.profile_id,
                    "key": c.key,
                    "old_value": {"v": c.old},
                    "new_value": {"v": c.new},
                    "event_id": c.event_id,
                    "timestamp": c.timestamp,
                    "source": c.source,
                    "recorded_at": now,
                }
                for c in changes
            ],
        )
    if links:
        statement = _insert(session, ProfileAccount).on_conflict_do_nothing()
        await session.execute(
            statement,
            [
                {"profile_id": p, "account_id": a, "workspace_id": workspace_id, "created_at": now}
                for p, a in sorted(links)
            ],
        )
    await session.flush()


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
