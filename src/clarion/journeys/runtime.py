"""The journey runtime: runs enter on events, move in batches in `journeys.step` jobs
(`steps.py`), and wait on timers and events, each move in the transaction of what caused it.

- **Entering** (`on_events`, called by the pipeline after profiles and segments, in the
  events' transaction): a track event matching a live journey's event trigger (name and
  `where`; `Segment Entered` / `Exited` for segment triggers) enters the profile when the
  entry rules and the participation caps allow it, keyed by `entry_key`'s property; a
  `journeys.step` job takes the batch's new runs on. The same events end runs whose exit
  criteria they match, move runs waiting for them, and mark runs' goals reached. What an
  event means for a plan (triggers, exits, waits, keys, the entries a batch makes) is
  `matching.py`'s, shared with the dry run.
- **Guards**: events named as Clarion's own (`OWN_EVENT_NAMES`) count only from Clarion;
  events older than `ENTRY_MAX_AGE` or loaded in bulk enter nobody (these and the entry
  rules are in `entry.py`, shared with the dry run); an event a journey emitted enters
  none of the journeys it came through (`chain`), nor any after `MAX_CHAIN` of them
  (`matching.py`).
- **Stepping** (`step`): one job moves a batch of runs through instant nodes (conditions,
  splits, actions) until each waits or ends; the job's payload names the node it expects
  each run at, so a stale or repeated job moves nothing. Every move is a
  `journey_transitions` row.
- **Sending**: a send action queues its message through messaging with the idempotency key
  `journey:<run>:<node>:<action>` (`:<visit>` added from a run's second visit to a node on a
  loop), in the step's transaction: a retried step sends nothing twice.

A paused journey enters nobody and moves no run on (its jobs end without moving; resuming
schedules every live run again), but its runs still exit on their events, leave event waits
for the next node (held there until resumed) and reach their goals; archiving ends its live
runs at once. Schedule triggers (`journeys.schedule`, a recurring job per journey) enter
the segment's members at each tick; date triggers (`journeys.dates`, daily) enter the
profiles whose date comes within the day, each run waiting for its local moment (when a
date fires and what a pass covers: `dates.py`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from clarion.core.database import JSONDocument, UTCDateTime, among
from clarion.core.jobs.queue import enqueue
from clarion.core.jobs.worker import JobContext, PermanentFailure
from clarion.ingest.records import EventRecord
from clarion.journeys import matching
from clarion.journeys.compiler import Plan
from clarion.journeys.dates import (
    date_moment,
    dates_since,
    not_entered_before,
    one_date_pass_at_a_time,
)
from clarion.journeys.entry import Entry, Live, SeenRun, allowance, caps_left
from clarion.journeys.graph import DateTrigger, EntryRules, ScheduleTrigger, WaitNode
from clarion.journeys.models import LIVE_RUN_STATES, Journey, JourneyRun
from clarion.journeys.steps import (
    STEP,
    Moves,
    Plans,
    Stepper,
    step_jobs,
    step_payload,
)
from clarion.profiles import queries as profiles
from clarion.segments import service as segments
from clarion.segments.catalog import Catalog

log = logging.getLogger(__name__)

SCHEDULE = "journeys.schedule"  # job kind: a schedule trigger's tick
TICK_PRIORITY = 15  # schedule and date passes enter many profiles: bulk work, behind events
SCHEDULE_PAGE = 1_000
DATES = "journeys.dates"  # job kind: a date trigger's daily pass
DATES_CRON = "0 0 * * *"
ENTER_CHUNK = 500  # runs a statement inserts
TAKE_OVER_JOBS = 9  # other due step jobs a step takes over: up to 2,000 runs in all
_LIVE = text("state IN ('active', 'waiting')")  # LIVE_RUN_STATES, as the index says it


class Runtime:
    """Enters, moves and ends runs (one per process: it keeps compiled plans)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.plans = Plans()
        self.stepper = Stepper(catalog, self.plans)

    async def plan(self, session: AsyncSession, journey_id: int, number: int) -> Plan:
        """The compiled plan of a published version."""
        return await self.plans.get(session, journey_id, number)

    async def _published(self, session: AsyncSession, workspace_id: int) -> list[Live]:
        """The workspace's live and paused journeys, with their plans."""
        journeys = (
            await session.scalars(
                select(Journey).where(
                    Journey.workspace_id == workspace_id,
                    Journey.state.in_(("live", "paused")),
                    Journey.live_version.is_not(None),
                )
            )
        ).all()
        found = []
        for journey in journeys:
            assert journey.live_version is not None
            found.append(Live(journey, await self.plan(session, journey.id, journey.live_version)))
        return found

    # --- events -----------------------------------------------------------------------------

    async def on_events(
        self,
        session: AsyncSession,
        *,
        workspace_id: int,
        events: Mapping[uuid.UUID, Sequence[EventRecord]],
        now: datetime,
    ) -> None:
        """Let this batch's track events (by canonical profile) end runs, move waiting runs
        (of paused journeys too: they move on when resumed), enter profiles into live
        journeys (not on events too old, loaded in bulk, or emitted by a run of the
        journey or of one it led to) and mark goals reached. Clarion's own event names
        count only from Clarion. Flushes, never commits."""
        tracked = matching.tracked(events)
        if not tracked:
            return
        published = await self._published(session, workspace_id)
        if not published:
            return
        moves = Moves(now)
        moved = await self._advance_runs(
            session, workspace_id, {item.journey.id for item in published}, tracked, moves
        )
        await moves.write_runs(session)  # entry rules read runs ended just now as ended
        entered: list[JourneyRun] = []
        live = [item for item in published if item.journey.state == "live"]
        chains = await matching.chains(session, workspace_id, tracked) if live else {}
        for item in live:
            entries = matching.entries(item, tracked, chains)
            if entries:
                entered += await _enter(session, item, entries, moves)
        # What the events start happens now, in their transaction: no job stands between a
        # customer's action and the journey's first reaction to it.
        journeys = {item.journey.id: item.journey for item in published}
        await self.stepper.advance(session, [*moved, *entered], moves, journeys)
        # The batch's later events count for the runs it started: an order right after the
        # checkout ends the cart's run, an awaited event moves it on, and (below) reaches
        # its goal.
        later = await self._apply_events(session, entered, tracked, moves)
        await self.stepper.advance(session, later, moves, journeys)
        await self._convert(session, workspace_id, published, tracked, now)
        await moves.flush(session)

    async def on_merges(
        self,
        session: AsyncSession,
        *,
        workspace_id: int,
        absorbed: Mapping[uuid.UUID, uuid.UUID],
        now: datetime,
    ) -> None:
        """Give the runs of profiles merged away to the profile each went into (so its
        events end and move them, and entry rules count them); a live run whose journey
        and key the survivor already has live ends ("merged"). Flushes, never commits."""
        if not absorbed:
            return
        query = (
            select(JourneyRun)
            .where(
                JourneyRun.workspace_id == workspace_id,
                JourneyRun.profile_id.in_(list(absorbed)),
            )
            .order_by(JourneyRun.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        runs = (await session.scalars(query)).all()
        if not runs:
            return
        survivors = set(absorbed.values())
        live = {
            (journey_id, profile_id, key)
            for journey_id, profile_id, key in await session.execute(
                select(JourneyRun.journey_id, JourneyRun.profile_id, JourneyRun.entry_key).where(
                    JourneyRun.workspace_id == workspace_id,
                    JourneyRun.profile_id.in_(survivors),
                    JourneyRun.state.in_(LIVE_RUN_STATES),
                )
            )
        }
        moves = Moves(now)
        by_survivor: dict[uuid.UUID, list[int]] = {}
        for run in runs:
            survivor = absorbed[run.profile_id]
            if run.state in LIVE_RUN_STATES:
                if (run.journey_id, survivor, run.entry_key) in live:
                    moves.finish(run, "exited", f"merged into profile {survivor}")
                else:
                    live.add((run.journey_id, survivor, run.entry_key))
            by_survivor.setdefault(survivor, []).append(run.id)
        await moves.write_runs(session)  # ended first: the survivor's key stays unique
        for survivor, run_ids in by_survivor.items():
            await session.execute(
                update(JourneyRun)
                .where(JourneyRun.id.in_(run_ids))
                .values(profile_id=survivor)
                .execution_options(synchronize_session=False)
            )
        for run in runs:
            set_committed_value(run, "profile_id", absorbed[run.profile_id])
        await moves.flush(session)

    async def _advance_runs(
        self,
        session: AsyncSession,
        workspace_id: int,
        journey_ids: set[int],
        tracked: Mapping[uuid.UUID, list[EventRecord]],
        moves: Moves,
    ) -> list[JourneyRun]:
        """End the journeys' runs these events exit, and move those waiting for them
        (returned, to be advanced from their next node)."""
        query = (
            select(JourneyRun)
            .where(
                JourneyRun.workspace_id == workspace_id,
                among(session, JourneyRun.profile_id, tracked),
                JourneyRun.journey_id.in_(sorted(journey_ids)),
                JourneyRun.state.in_(LIVE_RUN_STATES),
            )
            .order_by(JourneyRun.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # a step moving the run meanwhile goes first
        return await self._apply_events(
            session, (await session.scalars(query)).all(), tracked, moves
        )

    async def _apply_events(
        self,
        session: AsyncSession,
        runs: Sequence[JourneyRun],
        tracked: Mapping[uuid.UUID, list[EventRecord]],
        moves: Moves,
    ) -> list[JourneyRun]:
        """End the live runs that events after their trigger exit, and move those waiting
        for one of them; the runs moved (to be advanced from their next node)."""
        moved = []
        for run in runs:
            if run.state not in LIVE_RUN_STATES:
                continue
            plan = await self.plan(session, run.journey_id, run.version)
            for event in tracked.get(run.profile_id, ()):
                if not matching.after_trigger(run, event):
                    continue
                if matching.exits(plan, event, run.entry_key):
                    moves.finish(run, "exited", f"exit: {event.name}")
                    break
                node = plan.nodes[run.node]
                if (
                    run.state == "waiting"
                    and isinstance(node, WaitNode)
                    and matching.ends_wait(plan, node, event, run.entry_key)
                ):
                    moves.move(run, node.next, f"event: {event.name}")
                    moved.append(run)
                    break
        return moved

    async def _convert(
        self,
        session: AsyncSession,
        workspace_id: int,
        live: Sequence[Live],
        tracked: Mapping[uuid.UUID, list[EventRecord]],
        now: datetime,
    ) -> None:
        """Mark converted the runs (live or ended, entered by this batch or before) whose
        goal event this batch holds: after the run's triggering event, within the goal's
        days, and for the run's entry key when the event carries the key's property."""
        windows = {
            item.journey.id: item.plan.graph.goal.within_days
            for item in live
            if item.plan.graph.goal is not None
        }
        if not windows:
            return
        oldest = now - timedelta(days=max(windows.values()) + 1)
        runs = (
            await session.scalars(
                select(JourneyRun).where(
                    JourneyRun.workspace_id == workspace_id,
                    JourneyRun.journey_id.in_(sorted(windows)),
                    among(session, JourneyRun.profile_id, tracked),
                    JourneyRun.converted_at.is_(None),
                    JourneyRun.entered_at >= oldest,
                )
            )
        ).all()
        for run in runs:
            plan = await self.plan(session, run.journey_id, run.version)
            goal = plan.graph.goal
            if goal is None:
                continue
            until = matching.entered(run) + timedelta(days=goal.within_days)
            reached = [
                e.timestamp
                for e in tracked[run.profile_id]
                if e.name == goal.event
                and matching.after_trigger(run, e)
                and e.timestamp < until
                and matching.for_key(plan, e, run.entry_key)
            ]
            if reached:
                run.converted_at = min(reached)
                run.updated_at = now

    async def _journey_plan(
        self, session: AsyncSession, context: JobContext
    ) -> tuple[Journey, Plan] | None:
        """The live journey a schedule or dates job names, with its plan (None once it is
        paused, archived or gone)."""
        try:
            journey_id = int(context.job.payload["journey_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no journey: {context.job.payload}") from error
        journey = await session.scalar(
            select(Journey).where(
                Journey.id == journey_id, Journey.workspace_id == context.job.workspace_id
            )
        )
        if journey is None or journey.state != "live" or not journey.live_version:
            return None
        return journey, await self.plan(session, journey.id, journey.live_version)

    async def run_schedule(self, context: JobContext) -> None:
        """The `journeys.schedule` job: a schedule trigger's tick enters every member of its
        segment (entry rules applied), a page of members per transaction."""
        cursor: str | None = None
        while True:
            async with context.database.write_session() as session:
                now = context.clock.now()
                found = await self._journey_plan(session, context)
                trigger = found[1].trigger.trigger if found else None
                if found is None or not isinstance(trigger, ScheduleTrigger):
                    await context.complete(session)  # paused, archived, or no longer scheduled
                    await session.commit()
                    return
                members, cursor = await segments.list_members(
                    session, workspace_id=context.job.workspace_id,
                    segment_id=trigger.segment_id, limit=SCHEDULE_PAGE, cursor=cursor,
                )  # fmt: skip
                tick = {"schedule": {"at": now.isoformat(), "segment_id": trigger.segment_id}}
                moves = Moves(now)
                entries = [Entry(member.profile_id, "", tick) for member in members]
                entered = await _enter(session, Live(*found), entries, moves)
                await self.stepper.advance(session, entered, moves, {found[0].id: found[0]})
                await moves.flush(session)
                if cursor is None:
                    await context.complete(session)
                await session.commit()
            if cursor is None:
                return

    async def run_dates(self, context: JobContext) -> None:
        """The `journeys.dates` job (daily, and once when published): enter, for a date
        trigger, every profile whose date (its anniversary when yearly, shifted by the
        offset) falls at the trigger's local time from the pass's scheduled tick (at most
        `DATES_LATE` back) to a day from now; the run waits at the trigger until that
        moment, or goes on at once when the pass ran after it (a worker down at midnight
        delays a birthday, never loses it). One run per profile and date (the date is its
        key), whatever state an earlier one is in."""
        async with context.database.write_session() as session:
            now = context.clock.now()
            found = await self._journey_plan(session, context)
            trigger = found[1].trigger.trigger if found else None
            if found is not None and isinstance(trigger, DateTrigger):
                await one_date_pass_at_a_time(session, found[0].id)
                since = dates_since(context.job.payload, now)
                moves = Moves(now)
                async for page in profiles.with_trait(
                    session, workspace_id=context.job.workspace_id, trait=trigger.trait
                ):
                    entries = []
                    for profile_id, value, zone_name in page:
                        moment = date_moment(trigger, value, zone_name, now, since=since)
                        if moment is not None:
                            tick = {"date": {"trait": trigger.trait, "at": moment.isoformat()}}
                            key = moment.date().isoformat()
                            wake_at = moment if moment > now else None
                            entries.append(Entry(profile_id, key, tick, wake_at=wake_at))
                    live = Live(*found)
                    entries, so_far = await not_entered_before(session, live, entries)
                    entered = await _enter(session, live, entries, moves, so_far=so_far)
                    await self.stepper.advance(session, entered, moves, {found[0].id: found[0]})
                await moves.flush(session)
            await context.complete(session)
            await session.commit()

    # --- steps ------------------------------------------------------------------------------

    async def step(self, context: JobContext) -> None:
        """The `journeys.step` job: move the runs it names on from the nodes it names (a
        run elsewhere by now was moved by another job: it is left alone). On its first
        attempt it takes over other due step jobs of the workspace (deleted in its
        transaction: they come back if it fails), so runs woken by many small jobs move in
        large batches; retried, it moves its runs one at a time (`_advance_alone`)."""
        try:
            expected = _expected([context.job.payload])
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no runs: {context.job.payload}") from error
        async with context.database.write_session() as session:
            await context.complete(session)
            now = context.clock.now()
            if context.job.attempts == 1:
                taken = await _take_over(session, context.job.workspace_id, context.job.id, now)
                for run_id, nodes in _expected(taken).items():
                    expected.setdefault(run_id, set()).update(nodes)
            query = (
                select(JourneyRun)
                .where(
                    among(session, JourneyRun.id, expected),
                    JourneyRun.workspace_id == context.job.workspace_id,
                )
                .order_by(JourneyRun.id)  # locks taken in one order: no deadlock
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update()
            runs = [
                run
                for run in await session.scalars(query)
                if run.state in LIVE_RUN_STATES and run.node in expected[run.id]
            ]
            if context.job.attempts == 1:
                moves = Moves(now)
                await self.stepper.advance(session, runs, moves)
                await moves.flush(session)
            else:  # retried: one run at a time, so a run that keeps failing fails alone
                for run in runs:
                    await self._advance_alone(session, run, now)
            await session.commit()

    async def _advance_alone(self, session: AsyncSession, run: JourneyRun, now: datetime) -> None:
        """Advance one run in a savepoint: a run whose step raises (a bug, data the plan
        did not foresee) ends `failed` with the error, for a person to retry or skip,
        and its batch goes on. Database errors still fail the job, which is retried."""
        moves = Moves(now)
        try:
            async with session.begin_nested():
                await self.stepper.advance(session, [run], moves)
                await moves.flush(session)
        except DBAPIError:
            raise
        except Exception as error:  # the run takes the failure, not its batch
            log.exception("journey %s: run %s failed at %s", run.journey_id, run.id, run.node)
            await session.refresh(run)  # as the savepoint left it
            failed = Moves(now)
            failed.finish(run, "failed", f"error: {type(error).__name__}: {error}")
            await failed.flush(session)


_TAKE_OVER = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE kind = :kind AND workspace_id = :workspace_id AND state = 'ready' AND run_at <= :now
      AND id <> :own
    ORDER BY priority, run_at, id
    LIMIT :limit {lock}
)
RETURNING payload
"""


async def _take_over(
    session: AsyncSession, workspace_id: int, own: int, now: datetime
) -> list[dict[str, Any]]:
    """Delete up to TAKE_OVER_JOBS other due, ready step jobs of the workspace (on
    PostgreSQL skipping those another worker holds); their payloads."""
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = (
        text(_TAKE_OVER.format(lock="FOR UPDATE SKIP LOCKED" if postgres else ""))
        .bindparams(bindparam("now", type_=UTCDateTime()))
        .columns(payload=JSONDocument)
    )
    rows = await session.execute(
        statement,
        {"kind": STEP, "workspace_id": workspace_id, "now": now, "own": own,
         "limit": TAKE_OVER_JOBS},
    )  # fmt: skip
    return [row.payload for row in rows]


def _expected(payloads: Sequence[Mapping[str, Any]]) -> dict[int, set[str]]:
    """The runs step jobs name, each with the nodes it is expected at (a run named by a
    stale job and a current one has two)."""
    expected: dict[int, set[str]] = {}
    for payload in payloads:
        for run_id, node in step_payload(payload).items():
            expected.setdefault(run_id, set()).add(node)
    return expected


async def schedule_step(session: AsyncSession, run: JourneyRun, now: datetime) -> None:
    """Have a step job take the run on from its node now."""
    await enqueue(session, step_jobs([(run.workspace_id, run.id, run.node)], now), now=now)


async def resume_runs(session: AsyncSession, *, journey_id: int, now: datetime) -> int:
    """Schedule every live run of a resumed journey again; how many."""
    runs = (
        await session.scalars(
            select(JourneyRun).where(
                JourneyRun.journey_id == journey_id, JourneyRun.state.in_(LIVE_RUN_STATES)
            )
        )
    ).all()
    moves = Moves(now)
    for run in runs:
        moves.wake(run, max(now, run.wake_at or now))
    await moves.flush(session)
    return len(runs)


async def end_runs(session: AsyncSession, *, journey_id: int, reason: str, now: datetime) -> int:
    """End every live run of the journey (archived), each with a transition; how many."""
    runs = (
        await session.scalars(
            select(JourneyRun).where(
                JourneyRun.journey_id == journey_id, JourneyRun.state.in_(LIVE_RUN_STATES)
            )
        )
    ).all()
    moves = Moves(now)
    for run in runs:
        moves.finish(run, "exited", reason)
    await moves.flush(session)
    return len(runs)


async def _enter(
    session: AsyncSession,
    live: Live,
    entries: Sequence[Entry],
    moves: Moves,
    *,
    so_far: Sequence[SeenRun] | None = None,
) -> list[JourneyRun]:
    """Enter the entries that the entry rules and the journey's participation caps allow,
    in order: new runs, each with its transition; those active at their trigger now, for
    the caller to advance (those entering `waiting` get a step job at their
    `wake_at`). An entry without a key enters nothing, nor one of a key with a live run:
    at most one per key, whoever enters concurrently (a partial unique index, not a
    lock). `so_far`: the entries' profiles' runs, when the caller read them (see
    `allowance`)."""
    journey, rules = live.journey, live.plan.graph.entry
    wanted = [entry for entry in entries if entry.key is not None]
    if not wanted:
        return []
    now = moves.now
    allowed = await allowance(
        session, journey_id=journey.id, rules=rules,
        profile_ids={entry.profile_id for entry in wanted}, now=now, so_far=so_far,
    )  # fmt: skip
    rows = [
        {
            "workspace_id": journey.workspace_id,
            "journey_id": journey.id,
            "version": journey.live_version,
            "profile_id": entry.profile_id,
            "entry_key": entry.key,
            "state": "waiting" if entry.wake_at else "active",
            "node": live.plan.start,
            "context": entry.context,
            "wake_at": entry.wake_at,
            "entered_at": now,
            "updated_at": now,
        }
        for entry in wanted
        if allowed.take(entry.profile_id, str(entry.key))
    ]
    rows = rows[: await _room(session, journey, rules, now, len(rows))]
    wake = {(entry.profile_id, entry.key): entry.wake_at for entry in wanted}
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    active = []
    for start in range(0, len(rows), ENTER_CHUNK):
        added = await session.scalars(
            insert(JourneyRun)
            .values(rows[start : start + ENTER_CHUNK])
            .on_conflict_do_nothing(
                index_elements=["journey_id", "profile_id", "entry_key"],
                index_where=_LIVE,  # literal: the partial index's own predicate
            )
            .returning(JourneyRun)
        )
        for run in added:
            moves.entered(journey.workspace_id, journey.id, run.id, live.plan.start)
            at = wake[(run.profile_id, run.entry_key)]
            if at is None:
                active.append(run)
            else:
                moves.wakes.setdefault(at, []).append((journey.workspace_id, run.id, run.node))
    return active


async def _room(
    session: AsyncSession, journey: Journey, rules: EntryRules, now: datetime, wanted: int
) -> int:
    """How many of `wanted` new runs the journey's participation caps leave room for (on
    PostgreSQL the journey row is locked first, so concurrent entries count each other)."""
    if rules.max_entries is None and rules.max_entries_per_day is None:
        return wanted
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(Journey.id).where(Journey.id == journey.id).with_for_update())
    left = await caps_left(session, journey_id=journey.id, rules=rules, now=now)
    return max(min(wanted, *left.values()), 0)
