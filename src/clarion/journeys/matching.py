"""What an event means for a published journey's plan, read by the runtime (`runtime.py`)
and, for the plan alone, by the dry run (`simulate.py`).

- **Per plan**: whether a track event triggers the journey (`triggers`), meets one of its
  exit criteria (`exits`), ends an event wait (`ends_wait`), may be for a run's entry key
  (`for_key`), and under which key it enters (`entry_key`).
- **Per run**: whether an event came after the run's triggering event (`after_trigger`,
  on the customer's clock: `entered`); events before it neither end nor move the run.
- **Per batch**: its track events by profile, forged ones left out (`tracked`); the
  entries they make into a live journey (`entries`), refusing history and events emitted
  along a chain of journeys that holds this one or `MAX_CHAIN` of them (`chains`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.ingest.internal import is_activity
from clarion.ingest.records import EventRecord
from clarion.journeys.compiler import Plan
from clarion.journeys.entry import SEGMENT_EVENTS, Entry, Live, forged, history_reason
from clarion.journeys.graph import EventTrigger, EventWait, SegmentTrigger, WaitNode
from clarion.journeys.models import JourneyRun
from clarion.segments import values

log = logging.getLogger(__name__)

# An event a journey's run emitted carries the journeys it came through (its run's `chain`
# and the run's journey); it enters none of them again, nor any journey once it came
# through this many: no loop of emitted events runs without end.
MAX_CHAIN = 5


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


def for_key(plan: Plan, event: TrackLike, key: str | None) -> bool:
    """Whether the event may be for a run of `key`: the journey has no entry key, the event
    lacks the key's property, or it holds this key."""
    if plan.graph.entry_key is None:
        return True
    found = entry_key(plan, event)
    return found is None or found == key


def after_trigger(run: JourneyRun, event: EventRecord) -> bool:
    """Whether the event came after the run's triggering event: later on the customer's
    clock, or at the same instant but stored after it."""
    since = entered(run)
    if event.timestamp != since:
        return event.timestamp > since
    trigger_id = run.context.get("event", {}).get("id")
    return not isinstance(trigger_id, int) or event.id > trigger_id


def entered(run: JourneyRun) -> datetime:
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


def _event_context(event: EventRecord, chain: Sequence[int] = ()) -> dict[str, Any]:
    """A run's context: its triggering event, and the journeys that event came through
    (`chain`, when a journey emitted it)."""
    context: dict[str, Any] = {
        "event": {
            "id": event.id,
            "name": event.name,
            "properties": event.properties,
            "timestamp": event.timestamp.isoformat(),
        }
    }
    if chain:
        context["chain"] = list(chain)
    return context


def tracked(
    events: Mapping[uuid.UUID, Sequence[EventRecord]],
) -> dict[uuid.UUID, list[EventRecord]]:
    """The batch's track events by profile, in the order they happened; events named as
    Clarion's own but sent by anyone else (forged) are left out."""
    tracked = {}
    for profile_id, batch in events.items():
        kept = sorted(
            (
                event
                for event in batch
                if event.type == "track"
                and event.name
                and not forged(event.name, from_clarion=not is_activity(event.source_id))
            ),
            key=lambda event: (event.timestamp, event.id),
        )
        if kept:
            tracked[profile_id] = kept
    return tracked


def entries(
    item: Live,
    tracked: Mapping[uuid.UUID, list[EventRecord]],
    chains: Mapping[int, tuple[int, ...]],
) -> list[Entry]:
    """The entries the events make into a live journey: those triggering it, neither older
    than ENTRY_MAX_AGE when received nor loaded in bulk, nor emitted along a chain of
    journeys that holds this one or MAX_CHAIN of them (refused, and logged: a loop)."""
    entries, looped = [], 0
    for profile_id, batch in tracked.items():
        for event in batch:
            if not triggers(item.plan, event) or _history(event):
                continue
            chain = chains.get(event.id, ())
            if item.journey.id in chain or len(chain) >= MAX_CHAIN:
                looped += 1
                continue
            key = entry_key(item.plan, event)
            entries.append(Entry(profile_id, key, _event_context(event, chain)))
    if looped:
        log.warning(
            "journey %s: %s entries refused: their events came from runs of this journey, "
            "or through %s journeys (a loop of emitted events)",
            item.journey.id, looped, MAX_CHAIN,
        )  # fmt: skip
    return entries


def _history(event: EventRecord) -> bool:
    """Whether the event is history, not news (`entry.history_reason`)."""
    reason = history_reason(
        happened=event.timestamp, received=event.received_at, context=event.context
    )
    return reason is not None


def _emitted_by(event: EventRecord) -> tuple[int, int] | None:
    """The journey and run that emitted the event (an emit action's `journey_id` and
    `journey_run_id`), believed only of Clarion's own events."""
    if is_activity(event.source_id):
        return None
    journey_id = event.properties.get("journey_id")
    run_id = event.properties.get("journey_run_id")
    if type(journey_id) is int and type(run_id) is int:
        return journey_id, run_id
    return None


async def chains(
    session: AsyncSession, workspace_id: int, tracked: Mapping[uuid.UUID, list[EventRecord]]
) -> dict[int, tuple[int, ...]]:
    """The journeys each event emitted by a run came through, by event id: the emitting
    run's own chain, then its journey."""
    emitted = {
        event.id: origin
        for batch in tracked.values()
        for event in batch
        if (origin := _emitted_by(event)) is not None
    }
    if not emitted:
        return {}
    rows = await session.execute(
        select(JourneyRun.id, JourneyRun.context).where(
            JourneyRun.workspace_id == workspace_id,
            JourneyRun.id.in_({run_id for _, run_id in emitted.values()}),
        )
    )
    before = {run_id: _chain(context) for run_id, context in rows}
    return {
        event_id: (*before.get(run_id, ()), journey_id)
        for event_id, (journey_id, run_id) in emitted.items()
    }


def _chain(context: Any) -> tuple[int, ...]:
    """The journeys a run's triggering event came through (its context's `chain`)."""
    chain = context.get("chain") if isinstance(context, dict) else None
    if not isinstance(chain, list):
        return ()
    return tuple(item for item in chain if type(item) is int)
