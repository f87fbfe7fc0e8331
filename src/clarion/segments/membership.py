"""Real-time membership: each processed batch re-evaluates only the segments its events and
trait changes can change, for the profiles they touched, from aggregates kept per profile
(never rescanning the event log); a condition that lapses with time alone is re-evaluated
at that moment by a job scheduled for that profile.

Entering and leaving are written as membership rows and history, and emitted as
`Segment Entered` / `Segment Exited` events into the event stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import CursorResult, Table, delete, select, text
from sqlalchemy import insert as insert_rows
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import among, hold_rows
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.ingest.internal import InternalEvent, OwnEvents, append_events, emit_events
from clarion.profiles import queries as profiles
from clarion.profiles.models import Profile
from clarion.segments import aggregates, predicate
from clarion.segments.aggregates import instant as to_instant
from clarion.segments.aggregates import micros
from clarion.segments.catalog import SegmentIndex, rule_context
from clarion.segments.models import ProfileSegmentState, Segment, SegmentChange, SegmentMember

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
LAPSE = "segments.lapse"  # job kind: re-evaluate one profile when time alone changes it
# Lapse jobs run behind event processing, ahead of bulk work.
LAPSE_PRIORITY = 5
BULK_ROWS = 5_000
# SQLite writes through the tables, not the ORM entities: a Core executemany skips the ORM's
# bulk path (about 9 us a row).
_STATES = cast(Table, ProfileSegmentState.__table__)
_MEMBERS = cast(Table, SegmentMember.__table__)
_CHANGES = cast(Table, SegmentChange.__table__)
_COUNT = text("UPDATE segments SET member_count = member_count + :delta WHERE id = :id")
_STATES_POSTGRES = (
    "INSERT INTO profile_segment_states"
    " (profile_id, workspace_id, aggregates, specs_version, next_changes, updated_at)"
    " SELECT p, $4::integer, a::jsonb, $5::varchar, n::jsonb, $6::timestamptz"
    " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s(p, a, n)"
    " ON CONFLICT (profile_id) DO UPDATE SET aggregates = excluded.aggregates,"
    " specs_version = excluded.specs_version, next_changes = excluded.next_changes,"
    " updated_at = excluded.updated_at"
)
_EXIT_POSTGRES = (
    "DELETE FROM segment_members AS m USING unnest($1::bigint[], $2::uuid[]) AS e(s, p)"
    " WHERE m.segment_id = e.s AND m.profile_id = e.p RETURNING m.segment_id, m.profile_id"
)
_HISTORY_POSTGRES = (
    "INSERT INTO segment_changes (segment_id, profile_id, change, workspace_id, cause, at)"
    " SELECT s, p, c, $4::integer, $5::varchar, $6::timestamptz"
    " FROM unnest($1::bigint[], $2::uuid[], $3::varchar[]) AS h(s, p, c)"
)
_ENTER_POSTGRES = (
    "INSERT INTO segment_members (segment_id, profile_id, workspace_id, entered_at)"
    " SELECT s, p, $3::integer, $4::timestamptz FROM unnest($1::bigint[], $2::uuid[]) AS e(s, p)"
    " ON CONFLICT DO NOTHING RETURNING segment_id, profile_id"
)


class Touched(NamedTuple):
    """What happened to one canonical profile: its new track events and changed traits (a
    named tuple: one for each profile of every run)."""

    events: Sequence[aggregates.TrackEvent] = ()
    trait_keys: frozenset[str] = frozenset()
    seen: bool = False  # any event applied (first / last seen may have moved)
    everything: bool = False  # merged, or time passed: every segment may have changed
    rebuild: bool = False  # its timeline changed under it (un-merge): aggregates from scratch


@dataclass
class Changes:
    """Entries and exits decided in one pass: (segment id, profile id)."""

    entered: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    exited: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    # With `hand_back`: their `Segment Entered` / `Exited` events, stored but not yet
    # processed, by canonical profile (the caller applies them in its transaction).
    emitted: OwnEvents = field(default_factory=dict)


class MemberCounts:
    """Changes of segments' member counts decided in a transaction, for `write` to apply
    just before it commits. A counter's row lock is what every concurrent run changing that
    segment waits on: taken at the end, it is held for the commit only, not through the
    rest of the run (Clarion's own events, journeys)."""

    def __init__(self) -> None:
        self._deltas: dict[int, int] = {}

    def add(self, changes: Changes) -> None:
        """Count the entries and exits written."""
        for segment_id, _ in changes.entered:
            self._deltas[segment_id] = self._deltas.get(segment_id, 0) + 1
        for segment_id, _ in changes.exited:
            self._deltas[segment_id] = self._deltas.get(segment_id, 0) - 1

    def merge(self, other: MemberCounts) -> None:
        """Take over another's changes (a savepoint's, once it is released)."""
        for segment_id, delta in other._deltas.items():
            self._deltas[segment_id] = self._deltas.get(segment_id, 0) + delta
        other._deltas.clear()

    async def write(self, session: AsyncSession) -> None:
        """Apply the changes (then none is left)."""
        deltas, self._deltas = self._deltas, {}
        await _count(session, deltas.items())


def facts_of(
    profile: Profile | profiles.ProfileSnapshot, state: Mapping[str, object]
) -> predicate.ProfileFacts:
    """What the predicate reads of a profile."""
    return predicate.ProfileFacts(
        traits=profile.traits,
        computed=profile.computed,
        first_seen_at=profile.first_seen_at,
        last_seen_at=profile.last_seen_at,
        aggregates=dict(state),
    )


async def evaluate_profiles(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    touched: Mapping[uuid.UUID, Touched],
    absorbed: Mapping[uuid.UUID, uuid.UUID],
    now: datetime,
    cause: str,
    hand_back: bool = False,
    origin: Mapping[str, int] | None = None,
    counts: MemberCounts | None = None,
) -> Changes:
    """Bring the touched profiles' memberships up to date; what changed. Flushes, never
    commits: the caller's transaction holds the events that caused it. With `hand_back`,
    the `Segment Entered` / `Exited` events are stored without processing jobs and
    returned in `Changes.emitted`, for the caller to apply in the same transaction.
    `origin` (a journey run's `journey_id` and `journey_run_id`, when one of its actions
    made the change) goes into those events' properties. With `counts`, the member counts'
    changes go there, for the caller to write before it commits (`MemberCounts`)."""
    changes = Changes()
    if not index.segments or not (touched or absorbed):
        return changes
    # A profile whose changes no segment reads (Clarion's own events, say) is left alone.
    affected = {profile_id: _candidates(index, what) for profile_id, what in touched.items()}
    touched = {
        profile_id: what
        for profile_id, what in touched.items()
        if affected[profile_id] or what.rebuild
    }
    for survivor in absorbed.values():
        # Its aggregates must now count the merged profile's events too (already on the
        # timeline, as are this batch's): rebuilt from it.
        touched[survivor] = Touched(everything=True, rebuild=True)
        affected[survivor] = set(index.segments)
    await _forget(
        session,
        workspace_id=workspace_id,
        index=index,
        profile_ids=list(absorbed),
        now=now,
        counts=counts,
    )
    if not touched:
        return changes
    rows = await profiles.canonical_profiles(
        session, workspace_id=workspace_id, profile_ids=sorted(touched)
    )
    if not rows:
        return changes
    ids = [row.id for row in rows]
    states = await _states(session, ids)
    stale = [
        i
        for i in ids
        if i not in states or states[i].specs_version != index.specs_version or touched[i].rebuild
    ]
    rebuilt = await _rebuild(session, workspace_id, index, stale, now)
    context = await rule_context(session, workspace_id=workspace_id, index=index, now=now)
    members = await _memberships(session, workspace_id, ids)
    lapses: list[NewJob] = []
    kept: list[KeptState] = []
    for profile in rows:
        what = touched[profile.id]
        if profile.id in rebuilt:
            document = rebuilt[profile.id]
            candidates = set(index.segments)
        else:
            document = states[profile.id].aggregates
            for event in what.events:
                named = index.specs_by_event.get(event.name)
                if named:
                    aggregates.observe(document, named, event, now=now)
            aggregates.prune(document, index.specs, now)
            candidates = affected[profile.id]
        evaluation = predicate.Evaluation(facts_of(profile, document), context)
        answers = _decide(
            index, evaluation, profile.id, candidates, members.get(profile.id, set()), changes
        )
        state, lapse = _keep_state(
            workspace_id,
            index,
            profile.id,
            document,
            None if profile.id in rebuilt else states.get(profile.id),
            states.get(profile.id),
            evaluation,
            answers,
            now,
        )
        kept.append(state)
        if lapse is not None:
            lapses.append(lapse)
    await _write_states(session, workspace_id, index, kept, now)
    await enqueue(session, lapses, now=now)
    written = await apply_changes(
        session,
        workspace_id=workspace_id,
        index=index,
        changes=changes,
        now=now,
        cause=cause,
        hand_back=hand_back,
        origin=origin,
        counts=counts,
    )
    changes.emitted = written.emitted
    return changes


def _candidates(index: SegmentIndex, what: Touched) -> set[int]:
    """The segments whose answer what happened to a profile can change."""
    if what.everything:
        return set(index.segments)
    return index.affected((event.name for event in what.events), what.trait_keys, events=what.seen)


def _decide(
    index: SegmentIndex,
    evaluation: predicate.Evaluation,
    profile_id: uuid.UUID,
    candidates: Iterable[int],
    current: set[int],
    changes: Changes,
) -> dict[int, bool]:
    """Add the profile's entries and exits among `candidates` to `changes`; each
    candidate's answer."""
    answers = {
        segment_id: evaluation.holds(index.segments[segment_id].rule)
        for segment_id in sorted(candidates)
    }
    for segment_id, holds in answers.items():
        if holds and segment_id not in current:
            changes.entered.append((segment_id, profile_id))
        elif not holds and segment_id in current:
            changes.exited.append((segment_id, profile_id))
    return answers


@dataclass(frozen=True, slots=True)
class KeptState:
    """A profile's `ProfileSegmentState`, read and written without the ORM: one statement
    for a batch's profiles either way."""

    profile_id: uuid.UUID
    aggregates: dict[str, Any]
    specs_version: str
    next_changes: dict[str, int | None]


async def _states(
    session: AsyncSession, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, KeptState]:
    table = ProfileSegmentState.__table__
    rows = await session.execute(
        select(
            table.c.profile_id, table.c.aggregates, table.c.specs_version, table.c.next_changes
        ).where(among(session, table.c.profile_id, profile_ids))
    )
    return {row[0]: KeptState(row[0], row[1], row[2], row[3]) for row in rows}


async def _write_states(
    session: AsyncSession,
    workspace_id: int,
    index: SegmentIndex,
    states: Sequence[KeptState],
    now: datetime,
) -> None:
    """Insert or replace the profiles' states (in profile order, as every writer locks
    them)."""
    if not states:
        return
    ordered = sorted(states, key=lambda state: state.profile_id)
    if session.get_bind().dialect.name == "postgresql":
        connection = await session.connection()
        await connection.exec_driver_sql(
            _STATES_POSTGRES,
            (
                [state.profile_id for state in ordered],
                [orjson.dumps(state.aggregates).decode() for state in ordered],
                [orjson.dumps(state.next_changes).decode() for state in ordered],
                workspace_id,
                index.specs_version,
                now,
            ),
        )
        return
    insert = sqlite_insert(_STATES)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["profile_id"],
            set_={
                "aggregates": insert.excluded.aggregates,
                "specs_version": insert.excluded.specs_version,
                "next_changes": insert.excluded.next_changes,
                "updated_at": insert.excluded.updated_at,
            },
        ),
        [
            {
                "profile_id": state.profile_id,
                "workspace_id": workspace_id,
                "aggregates": state.aggregates,
                "specs_version": index.specs_version,
                "next_changes": state.next_changes,
                "updated_at": now,
            }
            for state in ordered
        ],
    )


async def _rebuild(
    session: AsyncSession,
    workspace_id: int,
    index: SegmentIndex,
    profile_ids: Sequence[uuid.UUID],
    now: datetime,
) -> dict[uuid.UUID, dict[str, object]]:
    """Aggregates built from the timelines: for profiles new to real-time evaluation, or
    whose state was kept for another set of segments."""
    if not profile_ids:
        return {}
    # Only the events some segment keeps anything of: a rule on orders reads no page views.
    timelines = await profiles.tracked_events(
        session,
        workspace_id=workspace_id,
        profile_ids=profile_ids,
        names=index.specs_by_event.keys(),
    )
    return {
        profile_id: aggregates.build(
            index.specs,
            [aggregates.TrackEvent(e.name, e.timestamp, e.properties) for e in events],
            now,
            named=index.specs_by_event,
        )
        for profile_id, events in timelines.items()
    }


async def _memberships(
    session: AsyncSession, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, set[int]]:
    found: dict[uuid.UUID, set[int]] = {}
    rows = await session.execute(
        select(SegmentMember.profile_id, SegmentMember.segment_id).where(
            SegmentMember.workspace_id == workspace_id,
            among(session, SegmentMember.profile_id, profile_ids),
        )
    )
    for profile_id, segment_id in rows:
        found.setdefault(profile_id, set()).add(segment_id)
    return found


def _keep_state(
    workspace_id: int,
    index: SegmentIndex,
    profile_id: uuid.UUID,
    document: dict[str, Any],
    kept: KeptState | None,
    row: KeptState | None,
    evaluation: predicate.Evaluation,
    answers: dict[int, bool],
    now: datetime,
) -> tuple[KeptState, NewJob | None]:
    """The profile's state to store, with when time alone next changes each segment's
    answer; its next lapse check if that moved sooner. Only the segments just
    re-evaluated (or whose instant has passed) are asked again: the others' inputs have not
    changed, so their instants still hold."""
    now_us = micros(now)
    known: dict[str, int | None] = dict(kept.next_changes) if kept is not None else {}
    instants: dict[str, int | None] = {}
    for segment_id in index.time_based:
        key = str(segment_id)
        stored = known.get(key, -1)
        if segment_id in answers or key not in known or (stored is not None and stored <= now_us):
            instants[key] = evaluation.next_change_us(
                index.segments[segment_id].rule,
                holds=answers.get(segment_id),
                conditions=index.time_conditions[segment_id],
            )
        else:
            instants[key] = stored
    upcoming = [instant for instant in instants.values() if instant is not None]
    next_check = to_instant(min(upcoming)) if upcoming else None
    before: dict[str, int | None] = row.next_changes if row is not None else {}
    scheduled = [moment for moment in before.values() if moment is not None]
    previous = to_instant(min(scheduled)) if scheduled else None
    state = KeptState(profile_id, document, index.specs_version, instants)
    if next_check is not None and (previous is None or previous <= now or next_check < previous):
        return state, lapse_job(workspace_id=workspace_id, profile_id=profile_id, at=next_check)
    return state, None


def lapse_job(*, workspace_id: int, profile_id: uuid.UUID, at: datetime) -> NewJob:
    """A job re-evaluating the profile at `at` (one per profile and instant)."""
    return NewJob(
        workspace_id=workspace_id,
        kind=LAPSE,
        payload={"profile_id": str(profile_id)},
        run_at=at,
        priority=LAPSE_PRIORITY,
        dedupe_key=f"{profile_id}:{int(at.timestamp() * 1_000_000)}",
    )


async def _forget(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    profile_ids: Sequence[uuid.UUID],
    now: datetime,
    counts: MemberCounts | None,
) -> None:
    """Profiles merged away are no longer anyone: their memberships end (recorded with
    cause `merged`, not announced) and their state goes; the survivor is re-evaluated whole,
    with the merged timeline."""
    if not profile_ids:
        return
    gone = (
        await session.execute(
            select(SegmentMember.segment_id, SegmentMember.profile_id).where(
                SegmentMember.workspace_id == workspace_id,
                SegmentMember.profile_id.in_(profile_ids),
            )
        )
    ).all()
    await apply_changes(
        session,
        workspace_id=workspace_id,
        index=index,
        changes=Changes(exited=[(row[0], row[1]) for row in gone]),
        now=now,
        cause="merged",
        emit=False,
        counts=counts,
    )
    await session.execute(
        delete(ProfileSegmentState).where(ProfileSegmentState.profile_id.in_(profile_ids))
    )


async def apply_changes(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    changes: Changes,
    now: datetime,
    cause: str,
    emit: bool = True,
    record: bool = True,
    hand_back: bool = False,
    origin: Mapping[str, int] | None = None,
    counts: MemberCounts | None = None,
) -> Changes:
    """Write entries and exits (members, history unless `record` is false, counts: now, or
    into `counts` for the caller to write before it commits) and emit
    their events (with `hand_back`, stored unprocessed in `emitted`: see
    `evaluate_profiles`); what was really written. Each row is inserted or deleted at most
    once whoever else decided the same change concurrently (a recompute and a lapse check,
    say): only the transaction that wrote it records and announces it. The segments
    written are held against their deletion until the transaction ends, once for the
    batch instead of a foreign key's check per row (migration 0020); the changes of a
    segment deleted since `index` was read are left out."""
    written = Changes()
    wanted = {segment_id for segment_id, _ in changes.entered + changes.exited}
    held = await hold_rows(session, Segment, workspace_id=workspace_id, ids=wanted)
    if held != wanted:
        changes = Changes(
            entered=[change for change in changes.entered if change[0] in held],
            exited=[change for change in changes.exited if change[0] in held],
        )
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(changes.entered), BULK_ROWS):
        chunk = changes.entered[start : start + BULK_ROWS]
        if postgres:  # one statement of arrays: no per-row parameters to bind
            connection = await session.connection()
            rows: Sequence[Any] = (
                await connection.exec_driver_sql(
                    _ENTER_POSTGRES,
                    (
                        [segment_id for segment_id, _ in chunk],
                        [profile_id for _, profile_id in chunk],
                        workspace_id,
                        now,
                    ),
                )
            ).all()
        else:
            rows = (
                await session.execute(
                    sqlite_insert(_MEMBERS)
                    .on_conflict_do_nothing(index_elements=["segment_id", "profile_id"])
                    .returning(_MEMBERS.c.segment_id, _MEMBERS.c.profile_id),
                    [
                        {
                            "segment_id": segment_id,
                            "profile_id": profile_id,
                            "workspace_id": workspace_id,
                            "entered_at": now,
                        }
                        for segment_id, profile_id in chunk
                    ],
                )
            ).all()
        written.entered.extend((int(row[0]), row[1]) for row in rows)
    exits = sorted(changes.exited)
    for start in range(0, len(exits), BULK_ROWS):
        chunk = exits[start : start + BULK_ROWS]
        if postgres:
            connection = await session.connection()
            gone: Sequence[Any] = (
                await connection.exec_driver_sql(
                    _EXIT_POSTGRES, ([segment_id for segment_id, _ in chunk], [p for _, p in chunk])
                )
            ).all()
            written.exited.extend((int(segment_id), profile_id) for segment_id, profile_id in gone)
            continue
        by_segment: dict[int, list[uuid.UUID]] = {}
        for segment_id, profile_id in chunk:
            by_segment.setdefault(segment_id, []).append(profile_id)
        for segment_id, profile_ids in sorted(by_segment.items()):
            result = await session.execute(
                delete(SegmentMember)
                .where(
                    SegmentMember.segment_id == segment_id,
                    SegmentMember.profile_id.in_(profile_ids),
                )
                .returning(SegmentMember.segment_id, SegmentMember.profile_id)
            )
            written.exited.extend((row[0], row[1]) for row in result)
    history = [("entered", pair) for pair in written.entered] + [
        ("exited", pair) for pair in written.exited
    ]
    for start in range(0, len(history) if record else 0, BULK_ROWS):
        part = history[start : start + BULK_ROWS]
        if postgres:
            connection = await session.connection()
            await connection.exec_driver_sql(
                _HISTORY_POSTGRES,
                (
                    [segment_id for _, (segment_id, _) in part],
                    [profile_id for _, (_, profile_id) in part],
                    [change for change, _ in part],
                    workspace_id,
                    cause,
                    now,
                ),
            )
            continue
        await session.execute(
            insert_rows(_CHANGES),
            [
                {
                    "workspace_id": workspace_id,
                    "segment_id": segment_id,
                    "profile_id": profile_id,
                    "change": change,
                    "cause": cause,
                    "at": now,
                }
                for change, (segment_id, profile_id) in part
            ],
        )
    if emit:
        for start in range(0, len(history), BULK_ROWS):
            part = history[start : start + BULK_ROWS]
            emitted = await emit_changes(
                session,
                workspace_id,
                index,
                Changes(
                    entered=[pair for change, pair in part if change == "entered"],
                    exited=[pair for change, pair in part if change == "exited"],
                ),
                now,
                hand_back=hand_back,
                origin=origin,
            )
            for profile_id, records in emitted.items():
                written.emitted.setdefault(profile_id, []).extend(records)
    # Last: the counters' row locks are what concurrent batches of the same segments wait
    # on, so they are held for as short a time as the transaction allows.
    later = MemberCounts() if counts is None else counts
    later.add(written)
    if counts is None:
        await later.write(session)
    return written


async def erase_profiles(
    session: AsyncSession, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[str, int]:
    """Forget erased profiles (a profile's erasure, `profiles.erasure`): their memberships
    end without a trace, each segment's `member_count` dropping with them, and their
    membership history goes; rows removed, by what they were. Their kept state
    (`ProfileSegmentState`) goes with the profile rows, by its cascading foreign key. No
    `Segment Exited` is recorded or emitted: nobody is left for a journey to act on.
    Flushes only."""
    if not profile_ids:
        return {}
    ids = sorted(set(profile_ids))
    left = await session.execute(
        delete(SegmentMember)
        .where(SegmentMember.workspace_id == workspace_id, SegmentMember.profile_id.in_(ids))
        .returning(SegmentMember.segment_id)
    )
    segment_ids = [int(row[0]) for row in left]
    history = await session.execute(
        delete(SegmentChange).where(
            SegmentChange.workspace_id == workspace_id, SegmentChange.profile_id.in_(ids)
        )
    )
    # Last, as every membership writer does: only the rows this transaction deleted count.
    await _count(session, [(segment_id, -1) for segment_id in segment_ids])
    return {
        "segment_memberships": len(segment_ids),
        "segment_changes": cast(CursorResult[Any], history).rowcount,
    }


async def _count(session: AsyncSession, deltas: Iterable[tuple[int, int]]) -> None:
    totals: dict[int, int] = {}
    for segment_id, delta in deltas:
        totals[segment_id] = totals.get(segment_id, 0) + delta
    moved = [{"id": id_, "delta": delta} for id_, delta in sorted(totals.items()) if delta]
    if moved:
        # One row at a time in the order of the ids (an executemany runs them in order), as
        # every writer does: concurrent batches wait for each other instead of deadlocking.
        # A single UPDATE of several rows locks them in its scan's order, and deadlocked.
        await session.execute(_COUNT, moved)


async def emit_changes(
    session: AsyncSession,
    workspace_id: int,
    index: SegmentIndex,
    changes: Changes,
    now: datetime,
    *,
    hand_back: bool = False,
    origin: Mapping[str, int] | None = None,
) -> OwnEvents:
    """`Segment Entered` / `Segment Exited` events for the changes, into the event stream,
    with `origin` in their properties when a journey run's action caused them; with
    `hand_back`, stored without processing jobs and returned by profile (else none
    returned: their jobs process them)."""
    pairs = [(SEGMENT_ENTERED, pair) for pair in changes.entered] + [
        (SEGMENT_EXITED, pair) for pair in changes.exited
    ]
    senders = await profiles.sender_ids(
        session, workspace_id=workspace_id, profile_ids=sorted({p for _, (_, p) in pairs})
    )
    stamp = micros(now)
    events = []
    profile_of: dict[str, uuid.UUID] = {}
    for name, (segment_id, profile_id) in pairs:
        user_id, anonymous_id = senders.get(profile_id, (None, None))
        segment = index.segments.get(segment_id)
        # The instant first: every run's ids land together at the end of the events'
        # (workspace, messageId) index, not at random places in it (a profile id first
        # cost about 4 KB of WAL and twice the time an insert once millions were there).
        message_id = f"clarion:{stamp}:{name}:{segment_id}:{profile_id}"
        profile_of[message_id] = profile_id
        events.append(
            InternalEvent(
                workspace_id=workspace_id,
                message_id=message_id,
                name=name,
                user_id=user_id,
                anonymous_id=None if user_id else anonymous_id,
                timestamp=now,
                properties={
                    "segment_id": segment_id,
                    "segment_name": segment.name if segment else None,
                    "profile_id": str(profile_id),
                    **(origin or {}),
                },
            )
        )
    if not hand_back:
        await emit_events(session, events, now=now)
        return {}
    by_profile: OwnEvents = {}
    for record in await append_events(session, events, now=now):
        by_profile.setdefault(profile_of[record.message_id], []).append(record)
    return by_profile
