"""The dry run: the path a profile would take through a journey's plan, given events at
chosen times, and what it would send, without writing or sending anything.

The profile is a real one (its traits, computed traits and timeline) or a described one
(traits only), with `traits` laid over either. Time is virtual: it starts at the first
event that triggers the journey and moves with each wait; conditions are evaluated at that
moment over the profile's events so far (its timeline and the given events), the way the
runtime evaluates them; exit criteria and event waits read the given events.

Entering is the runtime's: the first event that triggers the journey and, under an
`entry_key`, holds its property (one without it enters nothing); when none does the outcome
is `not_entered`, with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.journeys.compiler import Plan
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
from clarion.journeys.runtime import ends_wait, entry_key, exits, triggers
from clarion.journeys.steps import MAX_MOVES, split_path, wake_at
from clarion.profiles import queries as profiles
from clarion.segments import aggregates, predicate
from clarion.segments.catalog import SegmentIndex, rule_context

DESCRIBED = uuid.UUID(int=0)  # the split key of a described profile


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """A track event the simulated profile performs."""

    name: str
    at: datetime
    properties: dict[str, Any] = field(default_factory=dict)


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
    ordered = sorted(events, key=lambda e: e.at)
    triggering = [e for e in ordered if triggers(plan, e)]
    start = next((e for e in triggering if entry_key(plan, e) is not None), None)
    if start is None:
        result.reason = (
            "no event given triggers the journey"
            if not triggering
            else f"the triggering events lack {plan.graph.entry_key}, the entry key: "
            "an event without its key enters nothing"
        )
        return result
    base_traits: dict[str, Any] = {}
    computed: dict[str, Any] = {}
    history: list[aggregates.TrackEvent] = []
    if profile_id is not None:
        profile = await profiles.get_profile_or_raise(
            session, workspace_id=workspace_id, profile_id=profile_id
        )
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
