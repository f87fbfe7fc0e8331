"""The dry run: the path a profile would take through a journey's plan, given events at
chosen times, and what it would send, without writing or sending anything.

The profile is a real one (its traits, computed traits and timeline) or a described one
(traits only), with `traits` laid over either. Time is virtual: it starts at the first
event that triggers the journey and moves with each wait; conditions are evaluated at that
moment over the profile's events so far (its timeline and the given events), the way the
runtime evaluates them; exit criteria and event waits read the given events.

Entering is the runtime's (`entry.py`, the same guards and rules): the first event that
triggers the journey and, under an `entry_key`, holds its property (one without it enters
nothing), is news (received within `ENTRY_MAX_AGE` of when it happened, not loaded in
bulk), and that the entry rules (against the real profile's runs of this journey) and the
participation caps (against the journey's runs) let in at the time it is received; when
none does the outcome is `not_entered`, with the reason. An event named as Clarion's own
sent from a write key is seen by no journey, as in the runtime. (Loops of emitted events
need runs that emitted them: a dry run has none.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.journeys.compiler import Plan
from clarion.journeys.entry import (
    Allowance,
    caps_left_at,
    forged,
    history_reason,
    runs_so_far,
)
from clarion.journeys.graph import (
    ActionNode,
    ConditionNode,
    EmitAction,
    EventWait,
    ExitNode,
    SendAction,
    SplitNode,
    TriggerNode,
    WaitNode,
    WebhookAction,
)
from clarion.journeys.matching import ends_wait, entry_key, exits, triggers
from clarion.journeys.steps import MAX_MOVES, split_path, wake_at
from clarion.profiles import queries as profiles
from clarion.segments import aggregates, predicate
from clarion.segments.catalog import SegmentIndex, rule_context

DESCRIBED = uuid.UUID(int=0)  # the split key of a described profile
WRITE_KEY = "write_key"  # a simulated event's source: a library or the HTTP API


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """A track event the simulated profile performs."""

    name: str
    at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    received_at: datetime | None = None  # when Clarion gets it: `at` when None
    context: dict[str, Any] = field(default_factory=dict)  # `context.library.name`
    source: str | None = None  # "write_key" or "clarion" (None: Clarion's own names from it)

    @property
    def received(self) -> datetime:
        """When Clarion receives the event."""
        return self.received_at or self.at

    @property
    def forged(self) -> bool:
        """Whether no journey sees it: named as Clarion's own, sent from a write key."""
        return forged(self.name, from_clarion=self.source != WRITE_KEY)


@dataclass
class Simulation:
    """What the run would do: its moves, messages and emitted events, and how it ends."""

    outcome: str = "not_entered"  # or completed, exited, failed
    reason: str | None = None  # why not entered
    path: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    emitted: list[dict[str, Any]] = field(default_factory=list)


async def simulate(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int,
    plan: Plan,
    index: SegmentIndex,
    profile_id: uuid.UUID | None,
    traits: Mapping[str, Any],
    events: Sequence[SimulatedEvent],
) -> Simulation:
    """Walk the plan for the profile and events (see the module docstring)."""
    result = Simulation()
    base_traits: dict[str, Any] = {}
    computed: dict[str, Any] = {}
    history: list[aggregates.TrackEvent] = []
    profile = None
    if profile_id is not None:
        profile = await profiles.get_profile_or_raise(
            session, workspace_id=workspace_id, profile_id=profile_id
        )
    ordered = sorted((e for e in events if not e.forged), key=lambda e: e.at)
    start, result.reason = await _entry(
        session, journey_id=journey_id, plan=plan, profile_id=profile.id if profile else None,
        ordered=ordered, left_out=[e for e in events if e.forged],
    )  # fmt: skip
    if start is None:
        return result
    if profile is not None:
        base_traits, computed = dict(profile.traits), dict(profile.computed)
        timeline = await profiles.tracked_events(
            session, workspace_id=workspace_id, profile_ids=[profile.id]
        )
        history = [
            aggregates.TrackEvent(e.name, e.timestamp, e.properties) for e in timeline[profile.id]
        ]
    all_traits = {**base_traits, **traits}
    key = entry_key(plan, start)
    now, node_id = start.at, plan.start
    result.path.append({"node": node_id, "at": now, "reason": "entered"})

    def move(to: str, reason: str) -> None:
        nonlocal node_id
        node_id = to
        result.path.append({"node": to, "at": now, "reason": reason})

    def exit_between(since: datetime, until: datetime) -> SimulatedEvent | None:
        return next((e for e in ordered if since <= e.at <= until and exits(plan, e, key)), None)

    for _ in range(MAX_MOVES):
        node = plan.nodes[node_id]
        if isinstance(node, TriggerNode):
            move(node.next, "started")
        elif isinstance(node, ExitNode):
            result.outcome = "completed"
            return result
        elif isinstance(node, WaitNode):
            until = wake_at(node.wait, all_traits, now)
            arrived = next(
                (
                    e
                    for e in ordered
                    if now <= e.at <= until and e is not start and ends_wait(plan, node, e, key)
                ),
                None,
            )
            ended = exit_between(now, arrived.at if arrived else until)
            if ended is not None and ended is not start:
                now = ended.at
                result.path.append({"node": node_id, "at": now, "reason": f"exit: {ended.name}"})
                result.outcome = "exited"
                return result
            if arrived is not None:
                now = arrived.at
                move(node.next, f"event: {arrived.name}")
            else:
                now = until
                timed_out = isinstance(node.wait, EventWait)
                target = node.timeout_next if timed_out and node.timeout_next else node.next
                move(target, "timeout" if timed_out else "waited")
        elif isinstance(node, ConditionNode):
            seen = history + [
                aggregates.TrackEvent(e.name, e.at, e.properties) for e in ordered if e.at <= now
            ]
            context = await rule_context(session, workspace_id=workspace_id, index=index, now=now)
            target, why = node.otherwise, "otherwise"
            for number, branch in enumerate(node.branches):
                rule = plan.branch_rules[(node.id, number)]
                specs = aggregates.specs_for([rule])
                facts = predicate.ProfileFacts(
                    traits=all_traits,
                    computed=computed,
                    first_seen_at=None,
                    last_seen_at=None,
                    aggregates=aggregates.build(specs, seen, now),
                )
                if predicate.evaluate(rule, facts, context):
                    target, why = branch.next, f"branch {number}"
                    break
            move(target, why)
        elif isinstance(node, SplitNode):
            path = split_path(journey_id, node, profile_id or DESCRIBED)
            if path is None:
                result.path.append({"node": node_id, "at": now, "reason": "holdout"})
                result.outcome = "exited"
                return result
            move(path, "split")
        elif isinstance(node, ActionNode):
            for number, action in enumerate(node.actions):
                if isinstance(action, SendAction | WebhookAction):
                    result.messages.append(
                        {"node": node.id, "action": number, "template_id": action.template_id,
                         "channel_id": action.channel_id, "at": now}
                    )  # fmt: skip
                elif isinstance(action, EmitAction):
                    result.emitted.append({"node": node.id, "event": action.event, "at": now})
                else:  # traits: what they would become
                    all_traits.update(action.traits)
                if node.mode == "priority":
                    break
            move(node.next, "done")
    result.outcome = "failed"
    return result


async def _entry(
    session: AsyncSession,
    *,
    journey_id: int,
    plan: Plan,
    profile_id: uuid.UUID | None,
    ordered: Sequence[SimulatedEvent],
    left_out: Sequence[SimulatedEvent],
) -> tuple[SimulatedEvent | None, str | None]:
    """The first event that would enter the profile, or why none would: the runtime's
    checks in its order (the entry key, history, the entry rules, the caps)."""
    refused = [
        f"{e.name} at {e.at.isoformat()}: Clarion's own event sent from a write key, which "
        "no journey sees"
        for e in left_out
        if triggers(plan, e)
    ]
    triggering = [e for e in ordered if triggers(plan, e)]
    rules = plan.graph.entry
    so_far = (
        await runs_so_far(session, journey_id=journey_id, rules=rules, profile_ids=[profile_id])
        if triggering and profile_id is not None
        else []
    )
    checked: list[tuple[SimulatedEvent, str | None]] = []  # why each is refused, caps aside
    for event in triggering:
        key = entry_key(plan, event)
        why = (
            f"it lacks {plan.graph.entry_key}, the entry key: an event without its key "
            "enters nothing"
            if key is None
            else history_reason(happened=event.at, received=event.received, context=event.context)
        )
        if why is None and key is not None:
            allowed = Allowance(rules, event.received)
            for run in so_far:
                allowed.seen(*run)
            why = allowed.refusal(profile_id or DESCRIBED, key)
        checked.append((event, why))
    # Nothing is written, so the caps at each moment are the journey's runs alone: counted
    # once for every event that reaches them.
    left = await caps_left_at(
        session, journey_id=journey_id, rules=rules,
        moments={event.received for event, why in checked if why is None},
    )  # fmt: skip
    for event, why in checked:
        if why is None:
            full = [cap for cap, room in left[event.received].items() if room <= 0]
            why = f"the journey's {full[0]} cap is reached" if full else None
        if why is None:
            return event, None
        refused.append(f"{event.name} at {event.at.isoformat()}: {why}")
    return None, "; ".join(refused) or "no event given triggers the journey"
