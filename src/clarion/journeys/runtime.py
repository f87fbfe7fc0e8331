"""The journey runtime: runs enter on events, move node by node in `journeys.step` jobs, and
wait on timers and events, each move in the transaction of what caused it.

- **Entering** (`on_events`, called by the pipeline after profiles and segments, in the
  events' transaction): a track event matching a live journey's event trigger (name and
  `where`; `Segment Entered` / `Exited` for segment triggers) enters the profile when the
  entry rules allow it, keyed by `entry_key`'s property; a `journeys.step` job takes it on.
  The same events end runs whose exit criteria they match, and move runs waiting for them.
- **Stepping** (`step`): one job moves one run through instant nodes (conditions, splits,
  actions) until it waits or ends; the job's payload names the node it expects, so a stale
  or repeated job does nothing. Every move is a `journey_transitions` row.
- **Sending**: a send action queues its message through messaging with the idempotency key
  `journey:<run>:<node>:<action>`, in the step's transaction: a retried step sends nothing
  twice.

A paused journey neither enters nor moves runs (its jobs end without moving; resuming
schedules every live run again); archiving ends its live runs at once.

Run so far: event, segment, schedule and date triggers (`journeys.schedule`, a recurring
job per journey, enters the segment's members at each tick; `journeys.dates`, daily,
enters the profiles whose date comes within the day, each run waiting for its local
moment); duration, event, time-of-day and date waits (in the profile's time zone);
conditions; splits; send, webhook (a webhook template's body to a webhook channel, as a
message), emit-event and trait actions.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import ClarionError
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import JobContext, PermanentFailure
from clarion.ingest.internal import InternalEvent, emit_events
from clarion.ingest.records import EventRecord
from clarion.journeys.compiler import Plan, compile_journey
from clarion.journeys.graph import (
    ActionNode,
    ConditionNode,
    DateTrigger,
    DateWait,
    DurationWait,
    EmitAction,
    EventTrigger,
    EventWait,
    ExitNode,
    ScheduleTrigger,
    SegmentTrigger,
    SendAction,
    SplitNode,
    TimeWait,
    TraitAction,
    TriggerNode,
    Wait,
    WaitNode,
)
from clarion.journeys.models import (
    LIVE_RUN_STATES,
    Journey,
    JourneyRun,
    JourneyTransition,
    JourneyVersion,
)
from clarion.messaging import delivery
from clarion.messaging import templates as message_templates
from clarion.profiles import queries as profiles
from clarion.profiles import service as profile_service
from clarion.segments import service as segments
from clarion.segments import values
from clarion.segments.catalog import Catalog
from clarion.segments.explain import rule_holds
from clarion.segments.predicate import next_anniversary, profile_zone

STEP = "journeys.step"  # job kind: move one run on
STEP_PRIORITY = 15
SCHEDULE = "journeys.schedule"  # job kind: a schedule trigger's tick
SCHEDULE_PAGE = 1_000
DATES = "journeys.dates"  # job kind: a date trigger's daily pass
DATES_CRON = "0 0 * * *"
MAX_MOVES = 100  # per step job: a plan without instant loops never needs as many
SEGMENT_EVENTS = {"segment_entered": "Segment Entered", "segment_exited": "Segment Exited"}
_PLANS_KEPT = 500
_LIVE = text("state IN ('active', 'waiting')")  # LIVE_RUN_STATES, as the index says it


@dataclass(frozen=True, slots=True)
class _Live:
    """A journey new runs can enter, with the plan of its live version."""

    journey: Journey
    plan: Plan


class Runtime:
    """Enters, moves and ends runs (one per process: it keeps compiled plans)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._plans: dict[tuple[int, int], Plan] = {}

    # --- plans ------------------------------------------------------------------------------

    async def plan(self, session: AsyncSession, journey_id: int, number: int) -> Plan:
        """The compiled plan of a published version (kept per process: versions never
        change)."""
        found = self._plans.get((journey_id, number))
        if found is None:
            found = await version_plan(session, journey_id, number)
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            self._plans[(journey_id, number)] = found
        return found

    async def _live(self, session: AsyncSession, workspace_id: int) -> list[_Live]:
        journeys = (
            await session.scalars(
                select(Journey).where(
                    Journey.workspace_id == workspace_id,
                    Journey.state == "live",
                    Journey.live_version.is_not(None),
                )
            )
        ).all()
        found = []
        for journey in journeys:
            assert journey.live_version is not None
            found.append(_Live(journey, await self.plan(session, journey.id, journey.live_version)))
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
        and enter profiles. Flushes, never commits."""
        tracked = {
            profile_id: sorted(
                (e for e in batch if e.type == "track" and e.name), key=lambda e: e.timestamp
            )
            for profile_id, batch in events.items()
        }
        tracked = {p: batch for p, batch in tracked.items() if batch}
        if not tracked:
            return
        live = await self._live(session, workspace_id)
        if not live:
            return
        jobs: list[NewJob] = []
        await self._advance_runs(
            session, workspace_id, {item.journey.id for item in live}, tracked, now, jobs
        )
        await self._convert(session, workspace_id, live, tracked, now)
        for item in live:
            for profile_id, batch in tracked.items():
                for event in batch:
                    if triggers(item.plan, event):
                        key = entry_key(item.plan, event)
                        context = _event_context(event)
                        run = await _enter(session, item, profile_id, key, context, now)
                        if run is not None:
                            jobs.append(step_job(run, now))
        await enqueue(session, jobs, now=now)

    async def _advance_runs(
        self,
        session: AsyncSession,
        workspace_id: int,
        journey_ids: set[int],
        tracked: Mapping[uuid.UUID, list[EventRecord]],
        now: datetime,
        jobs: list[NewJob],
    ) -> None:
        """End the live journeys' runs these events exit, and move those waiting for them."""
        runs = (
            await session.scalars(
                select(JourneyRun)
                .where(
                    JourneyRun.workspace_id == workspace_id,
                    JourneyRun.profile_id.in_(list(tracked)),
                    JourneyRun.journey_id.in_(sorted(journey_ids)),
                    JourneyRun.state.in_(LIVE_RUN_STATES),
                )
                .order_by(JourneyRun.id)
            )
        ).all()
        for run in runs:
            plan = await self.plan(session, run.journey_id, run.version)
            since = _entered(run)
            for event in tracked[run.profile_id]:
                if event.timestamp < since:
                    continue
                if exits(plan, event, run.entry_key):
                    _finish(session, run, "exited", f"exit: {event.name}", now)
                    break
                node = plan.nodes[run.node]
                if (
                    run.state == "waiting"
                    and isinstance(node, WaitNode)
                    and ends_wait(plan, node, event, run.entry_key)
                ):
                    _move(session, run, node.next, f"event: {event.name}", now)
                    jobs.append(step_job(run, now))
                    break

    async def _convert(
        self,
        session: AsyncSession,
        workspace_id: int,
        live: Sequence[_Live],
        tracked: Mapping[uuid.UUID, list[EventRecord]],
        now: datetime,
    ) -> None:
        """Mark converted the runs (live or ended) whose goal event this batch holds, within
        the goal's days after the run's triggering event."""
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
                    JourneyRun.profile_id.in_(list(tracked)),
                    JourneyRun.converted_at.is_(None),
                    JourneyRun.entered_at >= oldest,
                )
            )
        ).all()
        for run in runs:
            goal = (await self.plan(session, run.journey_id, run.version)).graph.goal
            if goal is None:
                continue
            since = _entered(run)
            until = since + timedelta(days=goal.within_days)
            reached = [
                e.timestamp
                for e in tracked[run.profile_id]
                if e.name == goal.event and since <= e.timestamp < until
            ]
            if reached:
                run.converted_at = min(reached)
                run.updated_at = now

    async def run_schedule(self, context: JobContext) -> None:
        """The `journeys.schedule` job: a schedule trigger's tick enters every member of its
        segment (entry rules applied), a page of members per transaction."""
        try:
            journey_id = int(context.job.payload["journey_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no journey: {context.job.payload}") from error
        workspace_id = context.job.workspace_id
        cursor: str | None = None
        while True:
            async with context.database.write_session() as session:
                now = context.clock.now()
                journey = await session.scalar(
                    select(Journey).where(
                        Journey.id == journey_id, Journey.workspace_id == workspace_id
                    )
                )
                trigger = None
                if journey is not None and journey.state == "live" and journey.live_version:
                    plan = await self.plan(session, journey.id, journey.live_version)
                    trigger = plan.trigger.trigger
                if journey is None or not isinstance(trigger, ScheduleTrigger):
                    await context.complete(session)  # paused, archived, or no longer scheduled
                    await session.commit()
                    return
                members, cursor = await segments.list_members(
                    session, workspace_id=workspace_id, segment_id=trigger.segment_id,
                    limit=SCHEDULE_PAGE, cursor=cursor,
                )  # fmt: skip
                tick = {"schedule": {"at": now.isoformat(), "segment_id": trigger.segment_id}}
                jobs = []
                for member in members:
                    run = await _enter(
                        session, _Live(journey, plan), member.profile_id, "", tick, now
                    )
                    if run is not None:
                        jobs.append(step_job(run, now))
                await enqueue(session, jobs, now=now)
                if cursor is None:
                    await context.complete(session)
                await session.commit()
            if cursor is None:
                return

    async def run_dates(self, context: JobContext) -> None:
        """The `journeys.dates` job (daily, and once when published): enter, for a date
        trigger, every profile whose date (its anniversary when yearly, shifted by the
        offset) falls at the trigger's local time within the next day; the run waits at the
        trigger until that moment. One run per profile and date (the date is its key)."""
        try:
            journey_id = int(context.job.payload["journey_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no journey: {context.job.payload}") from error
        workspace_id = context.job.workspace_id
        async with context.database.write_session() as session:
            now = context.clock.now()
            journey = await session.scalar(
                select(Journey).where(
                    Journey.id == journey_id, Journey.workspace_id == workspace_id
                )
            )
            trigger = None
            if journey is not None and journey.state == "live" and journey.live_version:
                plan = await self.plan(session, journey.id, journey.live_version)
                trigger = plan.trigger.trigger
            if journey is not None and isinstance(trigger, DateTrigger):
                jobs = []
                async for page in profiles.with_trait(
                    session, workspace_id=workspace_id, trait=trigger.trait
                ):
                    for profile_id, value, zone_name in page:
                        moment = date_moment(trigger, value, zone_name, now)
                        if moment is None:
                            continue
                        key = moment.date().isoformat()
                        tick = {"date": {"trait": trigger.trait, "at": moment.isoformat()}}
                        run = await _enter(
                            session, _Live(journey, plan), profile_id, key, tick, now
                        )
                        if run is not None:
                            run.state, run.wake_at = "waiting", moment
                            jobs.append(step_job(run, moment))
                await enqueue(session, jobs, now=now)
            await context.complete(session)
            await session.commit()

    # --- steps ------------------------------------------------------------------------------

    async def step(self, context: JobContext) -> None:
        """The `journeys.step` job: move one run on from the node its payload names."""
        try:
            run_id = int(context.job.payload["run_id"])
            expected = str(context.job.payload["node"])
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no run: {context.job.payload}") from error
        async with context.database.write_session() as session:
            await context.complete(session)
            query = select(JourneyRun).where(
                JourneyRun.id == run_id, JourneyRun.workspace_id == context.job.workspace_id
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update()
            run = await session.scalar(query)
            if run is not None and run.state in LIVE_RUN_STATES and run.node == expected:
                await self._run(session, run, context.clock.now())
            await session.commit()

    async def _run(self, session: AsyncSession, run: JourneyRun, now: datetime) -> None:
        journey = await session.get(Journey, run.journey_id)
        if journey is None or journey.state == "archived":
            _finish(session, run, "exited", "journey archived", now)
            return
        if journey.state == "paused":
            return  # held where it is; resuming schedules it again
        plan = await self.plan(session, run.journey_id, run.version)
        jobs: list[NewJob] = []
        for _ in range(MAX_MOVES):
            node = plan.nodes[run.node]
            if isinstance(node, WaitNode):
                if run.state == "active":  # just arrived: start the wait
                    run.state = "waiting"
                    run.wake_at = await _wake_at(session, run, node, now)
                    run.updated_at = now
                    jobs.append(step_job(run, run.wake_at))
                    break
                if run.wake_at is not None and now < run.wake_at:
                    jobs.append(step_job(run, run.wake_at))  # early: wait on
                    break
                timed_out = isinstance(node.wait, EventWait)
                target = node.timeout_next if timed_out and node.timeout_next else node.next
                _move(session, run, target, "timeout" if timed_out else "waited", now)
            elif isinstance(node, TriggerNode):
                _move(session, run, node.next, "started", now)
            elif isinstance(node, ExitNode):
                _finish(session, run, "completed", "exit", now)
                break
            elif isinstance(node, ConditionNode):
                target, why = await self._branch(session, plan, run, node, now)
                _move(session, run, target, why, now)
            elif isinstance(node, SplitNode):
                path = split_path(run.journey_id, node, run.profile_id)
                if path is None:
                    _finish(session, run, "exited", "holdout", now)
                    break
                _move(session, run, path, "split", now)
            elif isinstance(node, ActionNode):
                failure = await _act(session, run, node, now)
                if failure is not None:
                    _finish(session, run, "failed", failure, now)
                    break
                _move(session, run, node.next, "done", now)
        else:
            _finish(session, run, "failed", f"more than {MAX_MOVES} moves in one step", now)
        await enqueue(session, jobs, now=now)

    async def _branch(
        self, session: AsyncSession, plan: Plan, run: JourneyRun, node: ConditionNode, now: datetime
    ) -> tuple[str, str]:
        index = await self.catalog.load(session, run.workspace_id)
        for number, branch in enumerate(node.branches):
            rule = plan.branch_rules[(node.id, number)]
            if await rule_holds(
                session,
                workspace_id=run.workspace_id,
                index=index,
                rule=rule,
                profile_id=run.profile_id,
                now=now,
            ):
                return branch.next, f"branch {number}"
        return node.otherwise, "otherwise"


async def version_plan(session: AsyncSession, journey_id: int, number: int) -> Plan:
    """The compiled plan of a published version (checked when published: what it names is
    not checked again, only read)."""
    version = await session.scalar(
        select(JourneyVersion).where(
            JourneyVersion.journey_id == journey_id, JourneyVersion.number == number
        )
    )
    if version is None:
        raise PermanentFailure(f"journey {journey_id} has no version {number}")
    return compile_journey(version.plan["graph"], None)


async def schedule_step(session: AsyncSession, run: JourneyRun, now: datetime) -> None:
    """Have a step job take the run on from its node now."""
    await enqueue(session, [step_job(run, now)], now=now)


async def resume_runs(session: AsyncSession, *, journey_id: int, now: datetime) -> int:
    """Schedule every live run of a resumed journey again; how many."""
    runs = (
        await session.scalars(
            select(JourneyRun).where(
                JourneyRun.journey_id == journey_id, JourneyRun.state.in_(LIVE_RUN_STATES)
            )
        )
    ).all()
    await enqueue(session, [step_job(run, max(now, run.wake_at or now)) for run in runs], now=now)
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
    for run in runs:
        _finish(session, run, "exited", reason, now)
    return len(runs)


def date_moment(trigger: DateTrigger, value: Any, zone_name: Any, now: datetime) -> datetime | None:
    """When a date trigger next fires for a profile with this date and time zone, if that
    is within a day from `now` (None otherwise, or for a value that is no date)."""
    text = str(value)[:10]
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    zone = profile_zone({"timezone": zone_name} if isinstance(zone_name, str) else {})
    at = time.fromisoformat(trigger.local_time)
    # The dates whose shifted day is within two days of now, either way (zones span a day).
    low = (now - timedelta(days=2 + trigger.offset_days)).date()
    high = (now + timedelta(days=2 - trigger.offset_days)).date()
    candidates = []
    if trigger.yearly:
        found = next_anniversary(text, low)
        while found is not None and found <= high:
            candidates.append(found)
            found = next_anniversary(text, found + timedelta(days=1))
    else:
        candidates.append(day)
    for base in candidates:
        moment = datetime.combine(
            base + timedelta(days=trigger.offset_days), at, tzinfo=zone
        ).astimezone(UTC)
        if now <= moment < now + timedelta(days=1):
            return moment
    return None


def step_job(run: JourneyRun, at: datetime) -> NewJob:
    """The job moving `run` on from its current node at `at` (one per run, node and time)."""
    return NewJob(
        workspace_id=run.workspace_id,
        kind=STEP,
        payload={"run_id": run.id, "node": run.node},
        run_at=at,
        priority=STEP_PRIORITY,
        dedupe_key=f"{run.id}:{run.node}:{int(at.timestamp() * 1_000_000)}",
    )


class TrackLike(Protocol):
    """What matching reads of an event: a stored one or a dry run's."""

    @property
    def name(self) -> str | None: ...
    @property
    def properties(self) -> dict[str, Any]: ...


def triggers(plan: Plan, event: TrackLike) -> bool:
    """Whether the event enters a profile into the plan (its event or segment trigger)."""
    trigger = plan.trigger.trigger
    if isinstance(trigger, EventTrigger):
        return event.name == trigger.event and values.matches(
            plan.wheres.get(f"nodes.{plan.start}.trigger.where"), event.properties
        )
    if isinstance(trigger, SegmentTrigger):
        return (
            event.name == SEGMENT_EVENTS[trigger.kind]
            and event.properties.get("segment_id") == trigger.segment_id
        )
    return False


def exits(plan: Plan, event: TrackLike, key: str | None) -> bool:
    """Whether the event meets one of the plan's exit criteria for a run of `key`."""
    return any(
        criterion.event == event.name
        and values.matches(plan.wheres.get(f"exit_when.{i}.where"), event.properties)
        and (not criterion.same_key or entry_key(plan, event) == key)
        for i, criterion in enumerate(plan.graph.exit_when)
    )


def ends_wait(plan: Plan, node: WaitNode, event: TrackLike, key: str | None) -> bool:
    """Whether the event is the one an event wait waits for, for a run of `key`."""
    wait = node.wait
    return (
        isinstance(wait, EventWait)
        and wait.event == event.name
        and values.matches(plan.wheres.get(f"nodes.{node.id}.wait.where"), event.properties)
        and (not wait.same_key or entry_key(plan, event) == key)
    )


def _entered(run: JourneyRun) -> datetime:
    """When the run's triggering event happened (events before it neither end nor move the
    run; compared on the customer's clock, as events arrive out of order)."""
    raw = run.context.get("event", {}).get("timestamp")
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else run.entered_at
    except ValueError:
        return run.entered_at


def entry_key(plan: Plan, event: TrackLike) -> str | None:
    """The event's entry key under the journey's `entry_key` ("" without one; None when the
    event lacks the property)."""
    if plan.graph.entry_key is None:
        return ""
    found = values.read(event.properties, plan.graph.entry_key.removeprefix("properties."))
    return None if found is None or isinstance(found, dict | list) else str(found)[:200]


def _event_context(event: EventRecord) -> dict[str, Any]:
    return {
        "event": {
            "name": event.name,
            "properties": event.properties,
            "timestamp": event.timestamp.isoformat(),
        }
    }


async def _enter(
    session: AsyncSession,
    live: _Live,
    profile_id: uuid.UUID,
    key: str | None,
    context: dict[str, Any],
    now: datetime,
) -> JourneyRun | None:
    """A new run when the entry rules allow it (None otherwise, without a key, or when a
    live run of the same key exists: at most one, whoever enters concurrently)."""
    journey, plan = live.journey, live.plan
    if key is None:
        return None
    rules = plan.graph.entry
    mine = (JourneyRun.journey_id == journey.id, JourneyRun.profile_id == profile_id)
    if rules.frequency == "once":
        if await session.scalar(select(func.count()).where(*mine, JourneyRun.entry_key == key)):
            return None
    elif rules.frequency == "once_per_period":
        assert rules.period_days is not None
        since = now - timedelta(days=rules.period_days)
        recent = select(func.count()).where(*mine, JourneyRun.entered_at > since)
        if await session.scalar(recent):
            return None
    active = select(func.count()).where(*mine, JourneyRun.state.in_(LIVE_RUN_STATES))
    if (await session.scalar(active) or 0) >= rules.max_active:
        return None
    row = {
        "workspace_id": journey.workspace_id,
        "journey_id": journey.id,
        "version": journey.live_version,
        "profile_id": profile_id,
        "entry_key": key,
        "state": "active",
        "node": plan.start,
        "context": context,
        "entered_at": now,
        "updated_at": now,
    }
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    run_id = await session.scalar(
        insert(JourneyRun)
        .values(**row)
        .on_conflict_do_nothing(
            index_elements=["journey_id", "profile_id", "entry_key"],
            index_where=_LIVE,  # literal: the partial index's own predicate
        )
        .returning(JourneyRun.id)
    )
    if run_id is None:
        return None
    run = await session.get(JourneyRun, run_id)
    assert run is not None
    session.add(_transition(run, None, plan.start, "entered", now))
    return run


def _move(session: AsyncSession, run: JourneyRun, to: str, reason: str, now: datetime) -> None:
    session.add(_transition(run, run.node, to, reason, now))
    run.node, run.state, run.wake_at, run.updated_at = to, "active", None, now


def _finish(session: AsyncSession, run: JourneyRun, state: str, reason: str, now: datetime) -> None:
    session.add(_transition(run, run.node, run.node, f"{state}: {reason}", now))
    run.state, run.reason, run.wake_at = state, reason, None
    run.updated_at = run.finished_at = now


def _transition(
    run: JourneyRun, from_node: str | None, to_node: str, reason: str, now: datetime
) -> JourneyTransition:
    return JourneyTransition(
        workspace_id=run.workspace_id,
        journey_id=run.journey_id,
        run_id=run.id,
        from_node=from_node,
        to_node=to_node,
        reason=reason[:200],
        at=now,
    )


async def _wake_at(
    session: AsyncSession, run: JourneyRun, node: WaitNode, now: datetime
) -> datetime:
    """When the wait the run starts now ends."""
    traits: Mapping[str, Any] = {}
    if isinstance(node.wait, TimeWait | DateWait):
        profile = await profiles.get_profile_or_raise(
            session, workspace_id=run.workspace_id, profile_id=run.profile_id
        )
        traits = profile.traits
    return wake_at(node.wait, traits, now)


def wake_at(wait: Wait, traits: Mapping[str, Any], now: datetime) -> datetime:
    """When a wait started at `now` ends for a profile with these traits (its `timezone`
    for local times; now, for a date already past or missing)."""
    if isinstance(wait, DurationWait):
        return now + timedelta(seconds=wait.seconds)
    if isinstance(wait, EventWait):
        return now + timedelta(seconds=wait.timeout_seconds)
    zone = profile_zone(dict(traits))
    local = now.astimezone(zone)
    if isinstance(wait, TimeWait):
        at = time.fromisoformat(wait.time)
        days = {_WEEKDAYS.index(day) for day in wait.days} if wait.days else set(range(7))
        for ahead in range(8):
            candidate = local.date() + timedelta(days=ahead)
            moment = datetime.combine(candidate, at, tzinfo=zone)
            if moment > local and candidate.weekday() in days:
                return moment.astimezone(UTC)
        raise AssertionError("a week always holds one of the days")  # pragma: no cover
    raw = traits.get(wait.trait)
    try:
        day = date.fromisoformat(str(raw)[:10]) if raw is not None else None
    except ValueError:
        day = None
    if day is None:
        return now  # no such date: nothing to wait for
    moment = datetime.combine(
        day + timedelta(days=wait.offset_days), time.fromisoformat(wait.local_time), tzinfo=zone
    )
    return max(now, moment.astimezone(UTC))


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def split_path(journey_id: int, node: SplitNode, profile_id: uuid.UUID) -> str | None:
    """The path a profile takes at a split, the same on every run (None: held out)."""
    digest = hashlib.sha256(f"{journey_id}:{node.id}:{profile_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if point * 100 < node.holdout_percent:
        return None
    rest = (point * 100 - node.holdout_percent) / (100 - node.holdout_percent)
    total = sum(path.weight for path in node.paths)
    mark = rest * total
    for path in node.paths:
        if mark < path.weight:
            return path.next
        mark -= path.weight
    return node.paths[-1].next


async def _act(
    session: AsyncSession, run: JourneyRun, node: ActionNode, now: datetime
) -> str | None:
    """Do the node's actions; why they failed, or None."""
    requests = []
    emitted: list[InternalEvent] = []
    traits_set = 0
    for number, action in enumerate(node.actions):
        if isinstance(action, EmitAction):
            emitted.append(await _event(session, run, node, number, action, now))
            if node.mode == "priority":
                break
            continue
        if isinstance(action, TraitAction):
            failure = await _set_traits(session, run, action, now)
            if failure is not None and node.mode != "priority":
                return f"action {number}: {failure}"
            if failure is None:
                traits_set += 1
                if node.mode == "priority":
                    break
            continue
        # A webhook is a message too: its template's body, signed and retried by delivery.
        try:
            template, version = await message_templates.current_version(
                session, workspace_id=run.workspace_id, template_id=action.template_id
            )
        except ClarionError as error:
            if node.mode == "priority":
                continue
            return f"action {number}: {error.detail}"
        requests.append(
            delivery.MessageRequest(
                profile_id=run.profile_id,
                template_id=template.id,
                template_version_id=version.id,
                channel=template.channel,
                channel_id=action.channel_id,
                category=template.category,
                topic_id=template.topic_id,
                priority=action.priority if isinstance(action, SendAction) else 0,
                idempotency_key=f"journey:{run.id}:{node.id}:{number}",
                origin="journey",
                origin_id=str(run.journey_id),
                context={
                    **run.context,
                    "journey": {"id": run.journey_id, "run_id": run.id, "node": node.id},
                },
            )
        )
        if node.mode == "priority":
            break
    if not requests and not emitted and not traits_set:
        return "no action could be done"
    if requests:
        await delivery.queue_messages(
            session, workspace_id=run.workspace_id, requests=requests, now=now
        )
    if emitted:
        await emit_events(session, emitted, now=now)
    return None


async def _set_traits(
    session: AsyncSession, run: JourneyRun, action: TraitAction, now: datetime
) -> str | None:
    """Set the traits on the run's profile (as the API sets them: trait history, segments
    told); why it could not, or None."""
    senders = await profiles.sender_ids(
        session, workspace_id=run.workspace_id, profile_ids=[run.profile_id]
    )
    user_id, _ = senders.get(run.profile_id, (None, None))
    if user_id is None:
        return "the profile has no user id to set traits on"
    await profile_service.upsert_profile(
        session, workspace_id=run.workspace_id, user_id=user_id, traits=dict(action.traits),
        now=now, source="api",
    )  # fmt: skip
    return None


async def _event(
    session: AsyncSession,
    run: JourneyRun,
    node: ActionNode,
    number: int,
    action: EmitAction,
    now: datetime,
) -> InternalEvent:
    """The track event an emit action sends about the run's profile (once per run, node
    and action: its messageId says so)."""
    senders = await profiles.sender_ids(
        session, workspace_id=run.workspace_id, profile_ids=[run.profile_id]
    )
    user_id, anonymous_id = senders.get(run.profile_id, (None, None))
    return InternalEvent(
        workspace_id=run.workspace_id,
        message_id=f"clarion:journey:{run.id}:{node.id}:{number}",
        name=action.event,
        user_id=user_id,
        anonymous_id=None if user_id else anonymous_id,
        timestamp=now,
        properties={
            **action.properties,
            "journey_id": run.journey_id,
            "journey_run_id": run.id,
        },
    )
