"""The journey graph as marketers draw it and the API stores it: JSON, one object per node,
each naming the nodes it leads to. These models check each node's shape; `compiler.py`
checks the graph as a whole (one trigger, everything reachable and wired, no loop without a
wait, references that exist) and turns it into the plan the runtime follows.

Nodes (`type`):

- `trigger`: how a profile enters. `event` (a track event, with `where` conditions on its
  properties), `segment_entered` / `segment_exited`, `schedule` (a cron over a segment's
  members), `date` (a date trait such as a birthday or a renewal, shifted by `offset_days`,
  at `local_time` in the profile's time zone, every year when `yearly`);
- `wait`: `duration` (seconds), `until_time` (the next `time` of day, on `days` of the week,
  in the profile's time zone), `until_date` (a date trait, shifted, at a local time), or
  `until_event` (an event, optionally matching `where` and the run's entry key, with
  `timeout_seconds` and a `timeout_next` branch);
- `condition`: branches tried in order, each a rule of the segmentation language (the
  object form or the conjunctive array form `[[a, b], [c]]`), then `otherwise`;
- `split`: weighted random paths, the same for a profile on every run, with an optional
  holdout that leaves the journey;
- `action`: one or more actions (send a message, call a webhook, update a trait, emit an
  event) run `parallel`, in `series` (stop at the first failure) or by `priority` (the first
  that succeeds wins);
- `exit`.

Publishing reads a graph strictly (`compile_journey`): `"5"` or `true` is no number of
seconds, `1.0` or `"11"` no template id. A graph of more than `MAX_NODES` nodes or
`MAX_GRAPH_BYTES` of JSON is refused even as a draft (`size_problem`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

NODE_ID = r"^[A-Za-z0-9_-]{1,64}$"
MAX_NODES = 200
MAX_GRAPH_BYTES = 256 * 1024  # of JSON: a drawn graph of MAX_NODES nodes needs far less
MAX_BRANCHES = 20
MAX_ACTIONS = 10
MAX_WAIT_SECONDS = 366 * 86_400
LOCAL_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
WEEKDAYS = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

NodeId = Annotated[str, Field(pattern=NODE_ID)]
Rule = dict[str, Any] | list[Any]  # the segmentation language, parsed by the compiler


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Triggers -------------------------------------------------------------------------------


class EventTrigger(_Shape):
    """A track event enters the profile; `where` conditions on the event's properties."""

    kind: Literal["event"]
    event: str = Field(min_length=1, max_length=200)
    where: dict[str, Any] | None = None


class SegmentTrigger(_Shape):
    """Entering (or leaving) a segment enters the profile."""

    kind: Literal["segment_entered", "segment_exited"]
    segment_id: int = Field(gt=0)


class ScheduleTrigger(_Shape):
    """On a cron schedule (UTC), every member of the segment enters."""

    kind: Literal["schedule"]
    cron: str = Field(min_length=9, max_length=100)
    segment_id: int = Field(gt=0)


class DateTrigger(_Shape):
    """The day a date trait names (shifted by `offset_days`), at `local_time` in the
    profile's time zone; every year when `yearly` (birthdays, anniversaries)."""

    kind: Literal["date"]
    trait: str = Field(min_length=1, max_length=200)
    offset_days: int = Field(default=0, ge=-366, le=366)
    local_time: str = Field(default="09:00", pattern=LOCAL_TIME)
    yearly: bool = True


Trigger = Annotated[
    EventTrigger | SegmentTrigger | ScheduleTrigger | DateTrigger, Field(discriminator="kind")
]


class EntryRules(_Shape):
    """Who may enter and how often: `once` ever, `once_per_period` (every `period_days`),
    `every_time`; with at most `max_active` runs of the profile at a time (per entry key).
    Participation caps bound the journey as a whole: at most `max_entries` runs ever (the
    first N customers of a limited offer), at most `max_entries_per_day` new runs a day
    (UTC); entries over a cap are turned away, not queued."""

    frequency: Literal["once", "once_per_period", "every_time"] = "once"
    period_days: int | None = Field(default=None, ge=1, le=3650)
    max_active: int = Field(default=1, ge=1, le=100)
    max_entries: int | None = Field(default=None, ge=1, le=1_000_000_000)
    max_entries_per_day: int | None = Field(default=None, ge=1, le=1_000_000_000)

    @model_validator(mode="after")
    def _period(self) -> EntryRules:
        if (self.frequency == "once_per_period") != (self.period_days is not None):
            raise ValueError("period_days goes with frequency once_per_period, and only with it")
        return self


class TriggerNode(_Shape):
    """Where the journey starts."""

    id: NodeId
    type: Literal["trigger"]
    trigger: Trigger
    next: NodeId


# --- Waits ----------------------------------------------------------------------------------


class DurationWait(_Shape):
    """Wait this long."""

    kind: Literal["duration"]
    seconds: int = Field(gt=0, le=MAX_WAIT_SECONDS)


class TimeWait(_Shape):
    """Wait until the next `time` of day in the profile's time zone, on one of `days`."""

    kind: Literal["until_time"]
    time: str = Field(pattern=LOCAL_TIME)
    days: list[WEEKDAYS] | None = Field(default=None, min_length=1, max_length=7)


class DateWait(_Shape):
    """Wait until the day a date trait names (shifted), at `local_time`."""

    kind: Literal["until_date"]
    trait: str = Field(min_length=1, max_length=200)
    offset_days: int = Field(default=0, ge=-366, le=366)
    local_time: str = Field(default="09:00", pattern=LOCAL_TIME)


class EventWait(_Shape):
    """Wait for an event (matching `where`, and the run's entry key when `same_key`) or
    `timeout_seconds`, whichever comes first."""

    kind: Literal["until_event"]
    event: str = Field(min_length=1, max_length=200)
    where: dict[str, Any] | None = None
    same_key: bool = False
    timeout_seconds: int = Field(gt=0, le=MAX_WAIT_SECONDS)


Wait = Annotated[DurationWait | TimeWait | DateWait | EventWait, Field(discriminator="kind")]


class WaitNode(_Shape):
    """A pause; an event wait goes on to `timeout_next` when its time runs out."""

    id: NodeId
    type: Literal["wait"]
    wait: Wait
    next: NodeId
    timeout_next: NodeId | None = None


# --- Branching ------------------------------------------------------------------------------


class Branch(_Shape):
    """A rule and where a profile goes when it holds."""

    when: Rule
    next: NodeId


class ConditionNode(_Shape):
    """The first branch whose rule holds, else `otherwise`."""

    id: NodeId
    type: Literal["condition"]
    branches: list[Branch] = Field(min_length=1, max_length=MAX_BRANCHES)
    otherwise: NodeId


class Path(_Shape):
    """One way out of a split, taken by `weight` parts of the profiles."""

    weight: int = Field(gt=0, le=10_000)
    next: NodeId


class SplitNode(_Shape):
    """Random paths, the same for a profile on every run; `holdout_percent` of the profiles
    leave the journey here (a control group)."""

    id: NodeId
    type: Literal["split"]
    paths: list[Path] = Field(min_length=2, max_length=MAX_BRANCHES)
    holdout_percent: float = Field(default=0.0, ge=0.0, lt=100.0)


# --- Actions --------------------------------------------------------------------------------


class SendAction(_Shape):
    """Send a message with a template (its channel, or `channel_id`'s)."""

    kind: Literal["send"]
    template_id: int = Field(gt=0)
    channel_id: int | None = Field(default=None, gt=0)
    priority: int = Field(default=0, ge=-100, le=100)


class WebhookAction(_Shape):
    """Call a webhook: a webhook template's body (rendered with the profile and the run's
    context) posted to a webhook channel, signed and retried like any message."""

    kind: Literal["webhook"]
    template_id: int = Field(gt=0)
    channel_id: int = Field(gt=0)


class TraitAction(_Shape):
    """Set traits on the profile (values may be templates)."""

    kind: Literal["update_traits"]
    traits: dict[str, Any] = Field(min_length=1, max_length=50)


class EmitAction(_Shape):
    """Emit a track event about the profile."""

    kind: Literal["emit_event"]
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


Action = Annotated[
    SendAction | WebhookAction | TraitAction | EmitAction, Field(discriminator="kind")
]


class ActionNode(_Shape):
    """Actions run `parallel` (all of them), in `series` (stop at the first failure) or by
    `priority` (in order until one succeeds; the rest are skipped)."""

    id: NodeId
    type: Literal["action"]
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)
    mode: Literal["parallel", "series", "priority"] = "parallel"
    next: NodeId


class ExitNode(_Shape):
    """The run ends here."""

    id: NodeId
    type: Literal["exit"]


Node = Annotated[
    TriggerNode | WaitNode | ConditionNode | SplitNode | ActionNode | ExitNode,
    Field(discriminator="type"),
]


# --- The journey ----------------------------------------------------------------------------


class ExitCriterion(_Shape):
    """An event that ends a run early (for the same entry key when `same_key`)."""

    event: str = Field(min_length=1, max_length=200)
    where: dict[str, Any] | None = None
    same_key: bool = False


class Goal(_Shape):
    """The event that counts a run as converted, within `within_days` of entering."""

    event: str = Field(min_length=1, max_length=200)
    within_days: int = Field(gt=0, le=365)


class AlertRules(_Shape):
    """When the journey raises alerts (listed by the API; posted to the webhook channel
    `channel_id` when given): `failure_percent` or more of the runs that ended within the
    last `window_minutes` failed (once `min_runs` ended), or runs are held at a node
    `stuck_minutes` past when they should have moved on."""

    failure_percent: float = Field(default=10.0, gt=0, le=100)
    min_runs: int = Field(default=20, ge=1, le=1_000_000)
    window_minutes: int = Field(default=60, ge=5, le=10_080)
    stuck_minutes: int = Field(default=60, ge=5, le=10_080)
    channel_id: int | None = Field(default=None, gt=0)


class JourneyGraph(_Shape):
    """A journey's plan as drawn: its nodes and the rules around them."""

    nodes: list[Node] = Field(min_length=2, max_length=MAX_NODES)
    entry: EntryRules = EntryRules()
    entry_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A property of the triggering event (`properties.cart_id`) that keys runs.",
    )
    exit_when: list[ExitCriterion] = Field(default_factory=list, max_length=MAX_BRANCHES)
    goal: Goal | None = None
    alerts: AlertRules = AlertRules()


def size_problem(raw: Any) -> str | None:
    """Why a drawn graph (JSON) is too big to keep, if it is: more than `MAX_NODES` nodes
    or `MAX_GRAPH_BYTES` of JSON."""
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if isinstance(nodes, list) and len(nodes) > MAX_NODES:
        return f"has {len(nodes)} nodes; a journey has at most {MAX_NODES}"
    try:
        size = len(orjson.dumps(raw))
    except TypeError:  # not JSON at all: its shape is refused elsewhere
        return None
    if size > MAX_GRAPH_BYTES:
        return f"is {size} bytes of JSON; a journey takes at most {MAX_GRAPH_BYTES}"
    return None
