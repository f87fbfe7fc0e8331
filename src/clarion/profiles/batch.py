"""Loading a batch's identity graph (locking it on PostgreSQL) and writing its outcome.

Everything a batch touches is read in a few queries, resolved in memory (`identity.Graph`),
and written once: profile rows, identities, timeline rows and trait history each in one bulk
statement. On PostgreSQL the batch first takes transaction advisory locks on its identity
keys and then row locks on every profile it reached, each in sorted order, so two workers
sharing profiles queue instead of interleaving; a deadlock or a lost race raises, the
transaction rolls back and the caller's job retries.

The hot statements are plain SQL over values the driver takes as they are (`_Codec`):
SQLAlchemy's per-value type processing and the ORM's unit of work cost more than the
queries themselves on a batch of a thousand events. Each statement still reads and writes
exactly what the `UTCDateTime`, `Uuid` and `JSONDocument` columns do.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import TextClause, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import sqlite_time, unindexed
from clarion.core.errors import Conflict
from clarion.profiles.identity import ANONYMOUS_ID, Graph, Key, ProfileRow
from clarion.profiles.models import (
    Account,
    Profile,
    ProfileAccount,
    ProfileIdentity,
)
from clarion.profiles.traits import Change

MAX_LOCK_HOPS = 4
# Bind parameters per statement: well under SQLite's 32,766 and asyncpg's 32,767.
_PARAMETERS = 5_000


def is_postgres(session: AsyncSession) -> bool:
    """Whether the session talks to PostgreSQL."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _insert(session: AsyncSession, table: Any) -> Any:
    module = postgresql if is_postgres(session) else sqlite
    return module.insert(table)


class _Codec:
    """Values as the driver takes and gives them for `UTCDateTime`, `Uuid` and `JSONDocument`
    columns: on SQLite naive UTC text, 32-digit hex and JSON text; on PostgreSQL (asyncpg)
    aware datetimes, UUIDs and JSON text (SQLAlchemy's jsonb codec decodes results)."""

    def __init__(self, session: AsyncSession) -> None:
        self.postgres = is_postgres(session)
        self._uuids: dict[Any, uuid.UUID] = {}

    def bind_time(self, value: datetime | None) -> Any:
        if self.postgres or value is None:
            return value
        if value.tzinfo is UTC:  # the usual case, without astimezone's cost
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return sqlite_time(value)

    def bind_uuid(self, value: uuid.UUID | None) -> Any:
        return value if self.postgres or value is None else value.hex

    @staticmethod
    def bind_json(value: Any) -> str:
        return orjson.dumps(value).decode()

    @staticmethod
    def read_time(raw: Any) -> datetime | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            return datetime.fromisoformat(raw).replace(tzinfo=UTC)
        moment: datetime = raw
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def read_uuid(self, raw: Any) -> uuid.UUID | None:
        if raw is None:
            return None
        found = self._uuids.get(raw)
        if found is None:
            found = self._uuids[raw] = uuid.UUID(raw if isinstance(raw, str) else str(raw))
        return found

    def read_id(self, raw: Any) -> uuid.UUID:
        """A non-null UUID column's value."""
        found = self.read_uuid(raw)
        if found is None:
            raise ValueError("NULL in a NOT NULL UUID column")
        return found

    @staticmethod
    def read_json(raw: Any) -> Any:
        return orjson.loads(raw) if isinstance(raw, str | bytes) else raw


def _in(postgres: bool, column: str, name: str, array_type: str) -> str:
    """`column` among the list bound as `name`: one array parameter on PostgreSQL (one plan
    whatever the length), an expanding list on SQLite."""
    if postgres:
        return f"{column} = ANY(CAST(:{name} AS {array_type}[]))"
    return f"{column} IN :{name}"


def _sql(postgres: bool, sql: str, *lists: str) -> TextClause:
    """A statement whose `lists` parameters were written with `_in`."""
    statement = text(sql)
    if postgres:
        return statement
    return statement.bindparams(*(bindparam(name, expanding=True) for name in lists))


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
        .where(unindexed(Profile.workspace_id) == workspace_id, Profile.id.in_(ids))
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


_PROFILE_COLUMNS = (
    "id, canonical_id, traits, trait_times, computed, first_seen_at, last_seen_at,"
    " created_at, updated_at"
)


async def _load_rows(
    session: AsyncSession, codec: _Codec, workspace_id: int, ids: set[uuid.UUID], *, lock: bool
) -> dict[uuid.UUID, ProfileRow]:
    """Like `load_profiles_closed`, as plain rows: the profiles and the canonical ones they
    point at, hop by hop (locked, in id order, on PostgreSQL)."""
    statement = _sql(
        codec.postgres,
        # `workspace_id + 0`: see core.database.unindexed.
        f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE workspace_id + 0 = :ws"  # noqa: S608
        f" AND {_in(codec.postgres, 'id', 'ids', 'uuid')} ORDER BY id"
        f"{' FOR UPDATE' if lock else ''}",
        "ids",
    )
    profiles: dict[uuid.UUID, ProfileRow] = {}
    wanted = set(ids)
    for _ in range(MAX_LOCK_HOPS):
        for chunk in _chunks(sorted(wanted - profiles.keys())):
            rows = await session.execute(
                statement, {"ws": workspace_id, "ids": [codec.bind_uuid(i) for i in chunk]}
            )
            for row in rows:
                profile = ProfileRow(
                    id=codec.read_id(row[0]),
                    workspace_id=workspace_id,
                    canonical_id=codec.read_uuid(row[1]),
                    traits=codec.read_json(row[2]),
                    trait_times=codec.read_json(row[3]),
                    computed=codec.read_json(row[4]),
                    first_seen_at=codec.read_time(row[5]),
                    last_seen_at=codec.read_time(row[6]),
                    created_at=codec.read_time(row[7]),  # type: ignore[arg-type]
                    updated_at=codec.read_time(row[8]),  # type: ignore[arg-type]
                )
                profiles[profile.id] = profile
        wanted = {p.canonical_id for p in profiles.values() if p.canonical_id} - profiles.keys()
        if not wanted:
            return profiles
    raise Conflict("Profiles were merged concurrently; retry the batch.")


async def _owners(
    session: AsyncSession, codec: _Codec, workspace_id: int, keys: set[Key]
) -> dict[Key, uuid.UUID]:
    """The profile row owning each known key, looked up by (workspace, kind, value) so the
    unique index serves every lookup."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in keys:
        by_kind.setdefault(kind, []).append(value)
    parts = [(kind, chunk) for kind, values in by_kind.items() for chunk in _chunks(sorted(values))]
    owner: dict[Key, uuid.UUID] = {}
    while parts:
        group: list[tuple[str, Sequence[str]]] = []
        size = 0
        while parts and (not group or size + len(parts[0][1]) <= _PARAMETERS):
            group.append(parts.pop(0))
            size += len(group[-1][1])
        sql = " UNION ALL ".join(
            (
                # Each value probed through the unique index: given `value = ANY(...)`, a
                # planner without statistics yet filters every identity of the kind instead.
                f"SELECT found.* FROM unnest(CAST(:v{n} AS text[])) AS wanted(value)"  # noqa: S608
                f" CROSS JOIN LATERAL (SELECT kind, value, profile_id FROM profile_identities"
                f" WHERE workspace_id = :ws AND kind = :k{n} AND value = wanted.value"
                f" OFFSET 0) AS found"
            )
            if codec.postgres
            else (
                f"SELECT kind, value, profile_id FROM profile_identities"  # noqa: S608
                f" WHERE workspace_id = :ws AND kind = :k{n} AND value IN :v{n}"
            )
            for n in range(len(group))
        )
        statement = _sql(codec.postgres, sql, *(f"v{n}" for n in range(len(group))))
        values: dict[str, Any] = {"ws": workspace_id}
        for n, (kind, chunk) in enumerate(group):
            values[f"k{n}"], values[f"v{n}"] = kind, list(chunk)
        for kind, value, profile_id in await session.execute(statement, values):
            owner[(kind, value)] = codec.read_id(profile_id)
    return owner


async def load_graph(
    session: AsyncSession, *, workspace_id: int, keys: set[Key], now: datetime
) -> Graph:
    """The identity graph around `keys`, locked on PostgreSQL."""
    codec = _Codec(session)
    lock = codec.postgres
    if lock:
        await _lock_keys(session, workspace_id, keys)
    owner = await _owners(session, codec, workspace_id, keys)
    profiles = await _load_rows(session, codec, workspace_id, set(owner.values()), lock=lock)
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


# PostgreSQL: each tree reached from its root by key (root, members by canonical_id, their
# user ids by profile_id), whatever the planner believes of tables still filling up.
_TREE_USER_IDS_POSTGRES = text(
    "SELECT i.value, m.id, m.canonical_id FROM unnest(CAST(:ids AS uuid[])) AS wanted(id)"
    " CROSS JOIN LATERAL (SELECT id, canonical_id FROM profiles WHERE id = wanted.id"
    " UNION ALL SELECT id, canonical_id FROM profiles WHERE canonical_id = wanted.id) AS m"
    " CROSS JOIN LATERAL (SELECT value FROM profile_identities WHERE profile_id = m.id"
    " AND kind = 'user_id' OFFSET 0) AS i"
)
_TREE_USER_IDS_SQLITE = text(
    "SELECT i.value, p.id, p.canonical_id FROM profiles AS p"
    " JOIN profile_identities AS i ON i.profile_id = p.id"
    " WHERE i.kind = 'user_id' AND (p.id IN :ids OR p.canonical_id IN :canonical)"
).bindparams(bindparam("ids", expanding=True), bindparam("canonical", expanding=True))


async def tree_user_ids(
    session: AsyncSession, canonical: set[uuid.UUID]
) -> dict[uuid.UUID, set[str]]:
    """The user ids held anywhere in each canonical profile's merge tree."""
    codec = _Codec(session)
    found: dict[uuid.UUID, set[str]] = {c: set() for c in canonical}
    statement = _TREE_USER_IDS_POSTGRES if codec.postgres else _TREE_USER_IDS_SQLITE
    for chunk in _chunks(sorted(canonical)):
        ids = [codec.bind_uuid(c) for c in chunk]
        for value, profile_id, canonical_id in await session.execute(
            statement, {"ids": ids, "canonical": ids}
        ):
            tree = codec.read_uuid(canonical_id) or codec.read_id(profile_id)
            found.setdefault(tree, set()).add(value)
    return found


_BLOCKED = (
    "SELECT survivor_id, absorbed_id, status, identity_kind, identity_value FROM profile_merges"
    " WHERE workspace_id = :ws AND status IN ('refused', 'unmerged') AND "
)


async def _load_blocked(
    session: AsyncSession, graph: Graph, ids: set[uuid.UUID], anonymous: list[str]
) -> None:
    if not ids and not anonymous:
        return
    codec = _Codec(session)
    pg = codec.postgres
    # One SELECT per condition, so each is served by its own index.
    parts: list[tuple[str, str, list[Any]]] = []
    for n, chunk in enumerate(_chunks(sorted(ids))):
        values = [codec.bind_uuid(i) for i in chunk]
        parts.append((_in(pg, "survivor_id", f"s{n}", "uuid"), f"s{n}", values))
        parts.append((_in(pg, "absorbed_id", f"a{n}", "uuid"), f"a{n}", values))
    for n, chunk in enumerate(_chunks(sorted(anonymous))):
        condition = f"identity_kind = '{ANONYMOUS_ID}' AND " + _in(
            pg, "identity_value", f"v{n}", "text"
        )
        parts.append((condition, f"v{n}", list(chunk)))
    statement = _sql(
        pg,
        " UNION ".join(_BLOCKED + condition for condition, _, _ in parts),
        *(p[1] for p in parts),
    )
    rows = await session.execute(
        statement, {"ws": graph.workspace_id, **{name: values for _, name, values in parts}}
    )

    def canon(profile_id: uuid.UUID) -> uuid.UUID:
        return graph.canonical(profile_id) if profile_id in graph.profiles else profile_id

    for raw_survivor, raw_absorbed, status, identity_kind, identity_value in rows:
        survivor_id, absorbed_id = codec.read_id(raw_survivor), codec.read_id(raw_absorbed)
        graph.blocked.add(frozenset((canon(survivor_id), canon(absorbed_id))))
        if status == "refused" and identity_kind == ANONYMOUS_ID:
            graph.refused_with.setdefault(identity_value or "", set()).add(survivor_id)


# Each id looked up through the unique index, even while the timeline, filling up from
# empty, has no statistics and the planner would rather scan it (see pipeline._EVENTS_POSTGRES).
_APPLIED_POSTGRES = text(
    "SELECT found.event_id FROM unnest(CAST(:ids AS bigint[])) AS wanted(id) CROSS JOIN LATERAL"
    " (SELECT event_id FROM profile_events WHERE workspace_id = :ws AND event_id = wanted.id"
    " OFFSET 0) AS found"
)
_APPLIED_SQLITE = text(
    "SELECT event_id FROM profile_events WHERE workspace_id = :ws AND event_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


async def applied_event_ids(
    session: AsyncSession, *, workspace_id: int, event_ids: Sequence[int]
) -> set[int]:
    """Which of `event_ids` are already on a timeline (applied before)."""
    statement = _APPLIED_POSTGRES if is_postgres(session) else _APPLIED_SQLITE
    found: set[int] = set()
    for chunk in _chunks(sorted(set(event_ids))):
        rows = await session.execute(statement, {"ws": workspace_id, "ids": list(chunk)})
        found |= {event_id for (event_id,) in rows}
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


_INSERT_PROFILE = (
    "INSERT INTO profiles (canonical_id, traits, trait_times, computed, first_seen_at,"
    " last_seen_at, updated_at, id, workspace_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_PROFILE = (
    "UPDATE profiles SET canonical_id = ?, traits = ?, trait_times = ?, computed = ?,"
    " first_seen_at = ?, last_seen_at = ?, updated_at = ? WHERE id = ?"
)


def _profile_values(codec: _Codec, profile: ProfileRow) -> tuple[Any, ...]:
    return (
        codec.bind_uuid(profile.canonical_id),
        codec.bind_json(profile.traits),
        codec.bind_json(profile.trait_times),
        codec.bind_json(profile.computed),
        codec.bind_time(profile.first_seen_at),
        codec.bind_time(profile.last_seen_at),
        codec.bind_time(profile.updated_at),
        codec.bind_uuid(profile.id),
    )


async def write_graph(session: AsyncSession, graph: Graph) -> None:
    """Write what resolution changed: profiles, identities, merges, flattened pointers."""
    codec = _Codec(session)
    await session.flush()  # what the caller added (new accounts) goes first
    if graph.new_profiles:
        # Live profiles first: a new profile merged into one created later in the batch points
        # at it, and the self-referencing key is checked row by row (chains are flattened, so
        # every pointer reaches a live profile).
        await _executemany(
            session,
            _INSERT_PROFILE,
            [
                (
                    *_profile_values(codec, profile),
                    profile.workspace_id,
                    codec.bind_time(profile.created_at),
                )
                for profile in sorted(graph.new_profiles, key=lambda p: p.canonical_id is not None)
            ],
        )
    fresh = {profile.id for profile in graph.new_profiles}
    changed = sorted(graph.touched - fresh)
    if changed:
        await _executemany(
            session, _UPDATE_PROFILE, [_profile_values(codec, graph.profiles[i]) for i in changed]
        )
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
    if graph.merges:
        session.add_all(graph.merges)
        await session.flush()


async def _insert_identities(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    statement = _insert(session, ProfileIdentity).on_conflict_do_nothing()
    inserted = await session.execute(statement.returning(ProfileIdentity.id), rows)
    if len(inserted.all()) != len(rows):
        # Another transaction claimed one of these identities first: start the batch again.
        raise Conflict("A profile identity was claimed concurrently; retry the batch.")


_INSERT_TIMELINE = (
    "INSERT INTO profile_events (workspace_id, profile_id, event_id, timestamp, applied_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
_INSERT_TIMELINE_POSTGRES = (
    "INSERT INTO profile_events (workspace_id, profile_id, event_id, timestamp, applied_at)"
    " SELECT $1::integer, p, e, t, $2::timestamptz"
    " FROM unnest($3::uuid[], $4::bigint[], $5::timestamptz[]) AS r(p, e, t)"
)
_INSERT_CHANGE = (
    "INSERT INTO profile_trait_changes (workspace_id, profile_id, key, old_value, new_value,"
    " event_id, timestamp, source, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class TimelineRow(NamedTuple):
    """An event put on a profile's timeline (the workspace's, applied at the batch's
    instant)."""

    profile_id: uuid.UUID
    event_id: int
    timestamp: datetime


async def write_rows(
    session: AsyncSession,
    *,
    workspace_id: int,
    now: datetime,
    timeline: list[TimelineRow],
    changes: list[Change],
    links: set[tuple[uuid.UUID, uuid.UUID]],
) -> None:
    """Bulk-insert timeline rows, trait history and account links, all applied `now`."""
    codec = _Codec(session)
    if timeline and codec.postgres:  # one statement of arrays: no per-row bind and execute
        connection = await session.connection()
        await connection.exec_driver_sql(
            _INSERT_TIMELINE_POSTGRES,
            (
                workspace_id,
                now,
                [row.profile_id for row in timeline],
                [row.event_id for row in timeline],
                [row.timestamp for row in timeline],
            ),
        )
    elif timeline:
        applied_at = codec.bind_time(now)
        await _executemany(
            session,
            _INSERT_TIMELINE,
            [
                (
                    workspace_id,
                    codec.bind_uuid(row.profile_id),
                    row.event_id,
                    codec.bind_time(row.timestamp),
                    applied_at,
                )
                for row in timeline
            ],
        )
    if changes:
        recorded_at = codec.bind_time(now)
        await _executemany(
            session,
            _INSERT_CHANGE,
            [
                (
                    workspace_id,
                    codec.bind_uuid(c.profile_id),
                    c.key,
                    codec.bind_json({"v": c.old}),
                    codec.bind_json({"v": c.new}),
                    c.event_id,
                    codec.bind_time(c.timestamp),
                    c.source,
                    recorded_at,
                )
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


async def _executemany(session: AsyncSession, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Run `sql` (written with `?` placeholders) once per row, handing the driver the values
    as they are, in the session's transaction."""
    if is_postgres(session):
        numbers = itertools.count(1)
        sql = re.sub(r"\?", lambda _: f"${next(numbers)}", sql)
    connection = await session.connection()
    await connection.exec_driver_sql(sql, rows)


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
