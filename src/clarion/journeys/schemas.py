"""Pydantic input and output shapes for journeys and their versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from clarion.core.schemas import AwareInstant, DisplayName
from clarion.journeys.graph import MAX_GRAPH_BYTES, MAX_NODES, size_problem
from clarion.journeys.models import Journey, JourneyVersion

State = Literal["draft", "live", "paused", "archived"]
GRAPH_DESCRIPTION = (
    "The journey as drawn: `nodes` (trigger, wait, condition, split, action, exit), `entry`, "
    "`entry_key`, `exit_when` and `goal`; see the journeys README. A draft may be incomplete; "
    "publishing compiles it and refuses it with every fault named. At most "
    f"{MAX_NODES} nodes and {MAX_GRAPH_BYTES // 1024} KiB of JSON, even as a draft."
)


def _kept_size(graph: dict[str, Any]) -> dict[str, Any]:
    problem = size_problem(graph)
    if problem is not None:
        raise ValueError(problem)
    return graph


# A drawn graph, as a draft keeps it: any shape, within a journey's size.
DrawnGraph = Annotated[
    dict[str, Any], AfterValidator(_kept_size), Field(description=GRAPH_DESCRIPTION)
]
# A row id: a whole number (no "1", no 1.0), from 1.
RowRef = Annotated[StrictInt, Field(gt=0)]


class JourneyCreate(BaseModel):
    """A new journey, as a draft."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName
    description: str = Field(default="", max_length=2000)
    graph: DrawnGraph


class JourneyUpdate(BaseModel):
    """Changes to a journey's draft; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: DisplayName | None = None
    description: str | None = Field(default=None, max_length=2000)
    graph: DrawnGraph | None = None


class GraphCheck(BaseModel):
    """A graph to validate without saving it."""

    model_config = ConfigDict(extra="forbid")

    graph: DrawnGraph


class Fault(BaseModel):
    """One reason a graph cannot run, under its node's id (`nodes.<id>.<field>`)."""

    field: str
    message: str


class GraphChecked(BaseModel):
    """Whether a graph would publish, and every fault if not."""

    valid: bool
    errors: list[Fault]


class JourneyRead(BaseModel):
    """A journey: its draft and where it stands."""

    id: int
    name: str
    description: str
    state: State
    graph: dict[str, Any] = Field(description="The draft.")
    live_version: int | None = Field(description="The version new entries follow.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, journey: Journey) -> JourneyRead:
        """The API's view of a journey row."""
        return cls(
            id=journey.id,
            name=journey.name,
            description=journey.description,
            state=journey.state,
            graph=journey.draft,
            live_version=journey.live_version,
            created_at=journey.created_at,
            updated_at=journey.updated_at,
        )


class JourneyPage(BaseModel):
    """A page of journeys, by id."""

    items: list[JourneyRead]
    next_cursor: str | None


class VersionRead(BaseModel):
    """A published version: its graph and the plan compiled from it."""

    number: int
    graph: dict[str, Any]
    plan: dict[str, Any]
    published_at: datetime

    @classmethod
    def from_row(cls, version: JourneyVersion) -> VersionRead:
        """The API's view of a version row."""
        return cls(
            number=version.number,
            graph=version.graph,
            plan=version.plan,
            published_at=version.published_at,
        )


class RunRead(BaseModel):
    """One profile's run through a journey."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    journey_id: int
    version: int
    profile_id: uuid.UUID
    entry_key: str
    state: Literal["active", "waiting", "completed", "exited", "failed"]
    node: str
    wake_at: datetime | None
    reason: str | None
    entered_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    converted_at: datetime | None


class RunPage(BaseModel):
    """A page of runs, newest first."""

    items: list[RunRead]
    next_cursor: str | None


class TransitionRead(BaseModel):
    """One move of a run."""

    model_config = ConfigDict(from_attributes=True)

    from_node: str | None
    to_node: str
    reason: str
    at: datetime


class RunDetail(RunRead):
    """A run with every move it made."""

    transitions: list[TransitionRead]


class NodeStats(BaseModel):
    """What passed through one node of one version: its runs that reached it (`entered`,
    each run once), and its runs there now by state."""

    version: int | None = Field(
        description="The published version the node is of (null: a draft never published)."
    )
    node: str
    type: str
    entered: int
    active: int
    waiting: int
    completed: int
    exited: int
    failed: int


class JourneyStats(BaseModel):
    """Per version (every version runs are on and the live one, oldest first) and node of
    its graph, in the graph's order (a funnel per version when read from the trigger down),
    with the totals of the same runs: a version's rows add up to its runs."""

    runs: int
    states: dict[str, int]
    converted: int = Field(description="Runs whose goal event came within its window.")
    nodes: list[NodeStats]


class NodeTiming(BaseModel):
    """How long runs took from reaching one node to reaching another (each run's first
    arrival at each), over the runs that reached both."""

    version: int | None = Field(
        description="The version whose runs it covers; null: the runs of every version."
    )
    from_node: str
    to_node: str
    runs: int
    p50_seconds: float | None
    p90_seconds: float | None


class SimulatedEventIn(BaseModel):
    """An event the simulated profile performs, at a time."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1, max_length=200)
    at: AwareInstant = Field(description="When it happens (ISO 8601 with an offset).")
    properties: dict[str, Any] = Field(default_factory=dict)
    received_at: AwareInstant | None = Field(
        default=None,
        description="When Clarion receives it (`at` when left out): received more than 24 "
        "hours after it happened, it is history and enters nobody.",
    )
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="The event's `context`: sent by a bulk loader (`library.name` "
        "`clarion-import-orders` or `clarion-demo`), it is history and enters nobody.",
    )
    source: Literal["write_key", "clarion"] | None = Field(
        default=None,
        description="Who sends it. Clarion's own event names (`Segment Entered`, `Email "
        "Opened`, ...) count for journeys only from `clarion`, which they come from when "
        "left out; from a `write_key` no journey sees them.",
    )


class SimulateRequest(BaseModel):
    """A dry run: a real profile (`profile_id`) or a described one (`traits`), and events."""

    model_config = ConfigDict(extra="forbid")

    profile_id: uuid.UUID | None = None
    traits: dict[str, Any] = Field(default_factory=dict, description="Laid over the profile's.")
    events: list[SimulatedEventIn] = Field(min_length=1, max_length=200)


class SimulatedStep(BaseModel):
    """A node the run reaches, when and why."""

    node: str
    at: datetime
    reason: str


class SimulatedMessage(BaseModel):
    """A message the run would send."""

    node: str
    action: int
    template_id: int
    channel_id: int | None
    at: datetime


class SimulatedEmit(BaseModel):
    """An event the run would emit."""

    node: str
    event: str
    at: datetime


class SimulationRead(BaseModel):
    """What the draft would do for that profile: nothing is written or sent."""

    outcome: Literal["not_entered", "completed", "exited", "failed"]
    reason: str | None = Field(
        default=None,
        description="Why the profile would not enter, as the runtime decides: no triggering "
        "event, or each one's reason (without the entry key's property, history, one of "
        "Clarion's own events from a write key, the entry rules, a participation cap).",
    )
    path: list[SimulatedStep]
    messages: list[SimulatedMessage]
    emitted: list[SimulatedEmit]


class ReadyMadeRead(BaseModel):
    """A ready-made journey one can start from."""

    kind: str
    name: str
    description: str
    templates: int = Field(description="How many template ids it takes, in order.")
    needs_segment: bool


class ReadyMadeCreate(BaseModel):
    """A draft journey from a ready-made one, with the workspace's templates (and segment);
    ids are whole numbers (no `"1"`, no `1.0`), and a field the kind does not use is
    refused."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=40)
    name: DisplayName | None = None
    template_ids: list[RowRef] = Field(max_length=10)
    segment_id: RowRef | None = Field(default=None, description="For the win-back journey.")
    days_before: StrictInt | None = Field(
        default=None, ge=0, le=60, description="For the birthday journey (0 when left out)."
    )


class AlertRead(BaseModel):
    """A journey alert: a failure rate over the journey's threshold (`node` null) or runs
    stuck at a node; `detail` holds the latest figures."""

    id: int
    journey_id: int
    journey_name: str
    kind: Literal["failure_rate", "stuck_node"]
    node: str | None
    state: Literal["open", "resolved"]
    detail: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None


class AlertPage(BaseModel):
    """Alerts, newest first."""

    items: list[AlertRead]
