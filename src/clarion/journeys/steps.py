"""Moving runs on, many at a time: a `journeys.step` job names a batch of runs (each with the
node it expects it at), and `Stepper.advance` moves them through instant nodes until each
waits or ends, node by node for the whole batch: one rule evaluation per condition branch,
one template lookup per action, one write of every transition, message, event and wake-up
job at the end (`Moves.flush`), in the step's transaction.

Actions of a node run `parallel` (all of them; the run fails if one did), in `series`
(stopping at the first failure, which fails the run) or by `priority` (the first that
succeeds; the run fails only if none did). What succeeded before a failure stays done: a
retry by hand runs the node again, and each action's idempotency key (a message's, an
event's messageId) keeps it from being done twice.

Those keys name the run, the node, the action and the visit: a run that comes back to a
node (a loop through a wait) sends and emits again, once per visit. The visit is counted
from the run's transitions into the node from another node (`_visits`, only for nodes on a
loop: elsewhere every visit is the first): a failure, a retry by hand or a retried step
moves no node, so it is the same visit and the same keys. The first visit's keys carry no
number (`journey:<run>:<node>:<action>`), as before visits were counted; later ones end in
it (`...:<action>:2`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from clarion.core.errors import ClarionError
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import PermanentFailure
from clarion.ingest.internal import InternalEvent, emit_events
from clarion.journeys.compiler import (
    Plan,
    compile_journey,
    trait_name_fault,
    trait_value_fault,
)
from clarion.journeys.graph import (
    Action,
    ActionNode,
    ConditionNode,
    DateWait,
    DurationWait,
    EmitAction,
    EventWait,
    ExitNode,
    SendAction,
    SplitNode,
    TimeWait,
    TraitAction,
    TriggerNode,
    Wait,
    WaitNode,
)
from clarion.journeys.models import Journey, JourneyRun, JourneyTransition, JourneyVersion
from clarion.messaging import delivery, rendering
from clarion.messaging import templates as message_templates
from clarion.messaging.rendering_env import RenderError
from clarion.profiles import queries as profiles
from clarion.profiles import service as profile_service
from clarion.segments.catalog import Catalog
from clarion.segments.explain import rule_holds_for
from clarion.segments.predicate import profile_zone

STEP = "journeys.step"  # job kind: move a batch of runs on
# Steps are reactions to what a customer just did (or to a timer due now): first come, first
# served with the events themselves. Behind events they would starve while events flow, as
# a worker always finds an event job to claim first.
STEP_PRIORITY = 0
STEP_BATCH = 200  # runs per step job
MAX_MOVES = 100  # per run and step: a plan without instant loops never needs as many
_PLANS_KEPT = 500
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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


class Plans:
    """Compiled plans of published versions, kept per process (versions never change)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[int, int], Plan] = {}

    async def get(self, session: AsyncSession, journey_id: int, number: int) -> Plan:
        """The plan of version `number` of the journey."""
        found = self._kept.get((journey_id, number))
        if found is None:
            found = await version_plan(session, journey_id, number)
            if len(self._kept) >= _PLANS_KEPT:
                self._kept.clear()
            self._kept[(journey_id, number)] = found
        return found


def step_jobs(runs: Sequence[tuple[int, int, str]], at: datetime) -> list[NewJob]:
    """Step jobs moving these (workspace, run id, node) on at `at`, STEP_BATCH runs a job;
    a job enqueued again for the same runs, nodes and time is a duplicate and dropped."""
    by_workspace: dict[int, list[list[Any]]] = {}
    for workspace_id, run_id, node in runs:
        by_workspace.setdefault(workspace_id, []).append([run_id, node])
    jobs = []
    stamp = int(at.timestamp() * 1_000_000)
    for workspace_id, pairs in by_workspace.items():
        for start in range(0, len(pairs), STEP_BATCH):
            chunk = pairs[start : start + STEP_BATCH]
            digest = hashlib.blake2b(repr(chunk).encode(), digest_size=12).hexdigest()
            jobs.append(
                NewJob(
                    workspace_id=workspace_id,
                    kind=STEP,
                    payload={"runs": chunk},
                    run_at=at,
                    priority=STEP_PRIORITY,
                    dedupe_key=f"{digest}:{stamp}",
                )
            )
    return jobs


def step_payload(payload: Mapping[str, Any]) -> dict[int, str]:
    """The runs a step job names, with the node each is expected at (jobs enqueued before
    steps were batched name one run: `run_id` and `node`)."""
    if "runs" in payload:
        return {int(run_id): str(node) for run_id, node in payload["runs"]}
    return {int(payload["run_id"]): str(payload["node"])}


@dataclass
class Moves:
    """What moving runs writes, gathered to be written at once by `flush`."""

    now: datetime
    runs: dict[int, JourneyRun] = field(default_factory=dict)  # changed, to be written
    transitions: list[dict[str, Any]] = field(default_factory=list)
    wakes: dict[datetime, list[tuple[int, int, str]]] = field(default_factory=dict)
    messages: dict[int, list[delivery.MessageRequest]] = field(default_factory=dict)
    events: list[InternalEvent] = field(default_factory=list)

    def record(self, run: JourneyRun, from_node: str | None, to_node: str, reason: str) -> None:
        """A transition of the run."""
        self._transition(run.workspace_id, run.journey_id, run.id, from_node, to_node, reason)

    def entered(self, workspace_id: int, journey_id: int, run_id: int, node: str) -> None:
        """A new run's first transition."""
        self._transition(workspace_id, journey_id, run_id, None, node, "entered")

    def _transition(
        self,
        workspace_id: int,
        journey_id: int,
        run_id: int,
        from_node: str | None,
        to_node: str,
        reason: str,
    ) -> None:
        self.transitions.append(
            {
                "workspace_id": workspace_id,
                "journey_id": journey_id,
                "run_id": run_id,
                "from_node": from_node,
                "to_node": to_node,
                "reason": reason[:200],
                "at": self.now,
            }
        )

    def move(self, run: JourneyRun, to: str, reason: str) -> None:
        """The run goes on to node `to`, active there."""
        self.record(run, run.node, to, reason)
        self._change(run, node=to, state="active", wake_at=None)

    def wait(self, run: JourneyRun, until: datetime) -> None:
        """The run waits at its node until `until`, when a step takes it on."""
        self._change(run, state="waiting", wake_at=until)
        self.wake(run, until)

    def finish(self, run: JourneyRun, state: str, reason: str) -> None:
        """The run ends (`completed`, `exited` or `failed`) where it is."""
        self.record(run, run.node, run.node, f"{state}: {reason}")
        self._change(run, state=state, reason=reason, wake_at=None, finished_at=self.now)

    def _change(self, run: JourneyRun, **values: Any) -> None:
        """Change the run in memory only (the session does not see it as changed): `flush`
        writes every changed run with one statement."""
        for name, value in {**values, "updated_at": self.now}.items():
            set_committed_value(run, name, value)
        self.runs[run.id] = run

    def wake(self, run: JourneyRun, at: datetime) -> None:
        """A step takes the run on from its node at `at`."""
        self.wakes.setdefault(at, []).append((run.workspace_id, run.id, run.node))

    async def write_runs(self, session: AsyncSession) -> None:
        """Write the changed runs now (before reading runs back from the database)."""
        if self.runs:
            await _update_runs(session, list(self.runs.values()))
            self.runs = {}

    async def flush(self, session: AsyncSession) -> None:
        """Write what was gathered, and start afresh."""
        await session.flush()
        await self.write_runs(session)
        if self.transitions:
            await _insert_transitions(session, self.transitions)
        for workspace_id, requests in self.messages.items():
            await delivery.queue_messages(
                session, workspace_id=workspace_id, requests=requests, now=self.now
            )
        if self.events:
            await emit_events(session, self.events, now=self.now)
        jobs = [job for at, runs in sorted(self.wakes.items()) for job in step_jobs(runs, at)]
        await enqueue(session, jobs, now=self.now)
        self.transitions, self.wakes, self.messages, self.events = [], {}, {}, []


_RUN_CHANGES = ("node", "state", "wake_at", "reason", "updated_at", "finished_at")
_POSTGRES_RUN_UPDATE = """
UPDATE journey_runs AS run SET node = v.node, state = v.state, wake_at = v.wake_at,
    reason = v.reason, updated_at = v.updated_at, finished_at = v.finished_at
FROM unnest($1::bigint[], $2::varchar[], $3::varchar[], $4::timestamptz[], $5::text[],
            $6::timestamptz[], $7::timestamptz[])
    AS v(id, node, state, wake_at, reason, updated_at, finished_at)
WHERE run.id = v.id
"""
_TRANSITION_COLUMNS = (
    "workspace_id",
    "journey_id",
    "run_id",
    "from_node",
    "to_node",
    "reason",
    "at",
)
_POSTGRES_TRANSITIONS = """
INSERT INTO journey_transitions (workspace_id, journey_id, run_id, from_node, to_node, reason, at)
SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::varchar[], $5::varchar[],
                     $6::varchar[], $7::timestamptz[])
"""
_RUNS = cast(Table, JourneyRun.__table__)


async def _update_runs(session: AsyncSession, runs: Sequence[JourneyRun]) -> None:
    """Write the runs' changed columns: on PostgreSQL one statement over arrays."""
    if session.get_bind().dialect.name == "postgresql":
        arrays = tuple([getattr(run, column) for run in runs] for column in ("id", *_RUN_CHANGES))
        connection = await session.connection()
        await connection.exec_driver_sql(_POSTGRES_RUN_UPDATE, arrays)
        return
    statement = (
        update(_RUNS)
        .where(_RUNS.c.id == bindparam("run_id"))
        .values({column: bindparam(column) for column in _RUN_CHANGES})
    )
    await session.execute(
        statement,
        [{"run_id": run.id, **{c: getattr(run, c) for c in _RUN_CHANGES}} for run in runs],
    )


async def _insert_transitions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert the transitions: on PostgreSQL one statement over arrays."""
    if session.get_bind().dialect.name == "postgresql":
        arrays = tuple([row[column] for row in rows] for column in _TRANSITION_COLUMNS)
        connection = await session.connection()
        await connection.exec_driver_sql(_POSTGRES_TRANSITIONS, arrays)
        return
    await session.execute(insert(JourneyTransition), rows)


class Stepper:
    """Moves runs on through their plans (one per process, with the runtime's plans)."""

    def __init__(self, catalog: Catalog, plans: Plans) -> None:
        self.catalog = catalog
        self.plans = plans

    async def advance(
        self,
        session: AsyncSession,
        runs: Sequence[JourneyRun],
        moves: Moves,
        journeys: Mapping[int, Journey] | None = None,
    ) -> None:
        """Move the runs on from their nodes until each waits or ends: a paused journey's
        runs stay where they are (resuming wakes them), an archived journey's exit.
        `journeys`: those the caller read in this transaction (the others are read)."""
        if not runs:
            return
        known = dict(journeys or {})
        missing = {run.journey_id for run in runs} - set(known)
        if missing:
            found = await session.scalars(select(Journey).where(Journey.id.in_(missing)))
            known.update((journey.id, journey) for journey in found)
        journeys = known
        moving = []
        for run in runs:
            journey = journeys.get(run.journey_id)
            if journey is None or journey.state == "archived":
                moves.finish(run, "exited", "journey archived")
            elif journey.state != "paused":
                moving.append(run)
        for _ in range(MAX_MOVES):
            if not moving:
                return
            at_node: dict[tuple[int, int, str], list[JourneyRun]] = {}
            for run in moving:
                at_node.setdefault((run.journey_id, run.version, run.node), []).append(run)
            moving = []
            for (journey_id, number, node_id), group in at_node.items():
                plan = await self.plans.get(session, journey_id, number)
                moving.extend(await self._visit(session, plan, plan.nodes[node_id], group, moves))
        for run in moving:
            moves.finish(run, "failed", f"more than {MAX_MOVES} moves in one step")

    async def _visit(
        self,
        session: AsyncSession,
        plan: Plan,
        node: Any,
        runs: list[JourneyRun],
        moves: Moves,
    ) -> list[JourneyRun]:
        """Do the node for runs at it (one journey version); the runs that went on."""
        if isinstance(node, WaitNode):
            return await _wait(session, node, runs, moves)
        if isinstance(node, TriggerNode):
            for run in runs:
                moves.move(run, node.next, "started")
            return runs
        if isinstance(node, ExitNode):
            for run in runs:
                moves.finish(run, "completed", "exit")
            return []
        if isinstance(node, ConditionNode):
            await self._branch(session, plan, node, runs, moves)
            return runs
        if isinstance(node, SplitNode):
            went_on = []
            for run in runs:
                path = split_path(run.journey_id, node, run.profile_id)
                if path is None:
                    moves.finish(run, "exited", "holdout")
                else:
                    moves.move(run, path, "split")
                    went_on.append(run)
            return went_on
        assert isinstance(node, ActionNode)
        return await _act(session, node, runs, moves, again=node.id in plan.looping)

    async def _branch(
        self,
        session: AsyncSession,
        plan: Plan,
        node: ConditionNode,
        runs: list[JourneyRun],
        moves: Moves,
    ) -> None:
        """Each run takes the first branch whose rule holds for its profile, else
        `otherwise` (so does a run whose profile is gone)."""
        workspace_id = runs[0].workspace_id
        index = await self.catalog.load(session, workspace_id)
        left = runs
        for number, branch in enumerate(node.branches):
            if not left:
                return
            holds = await rule_holds_for(
                session,
                workspace_id=workspace_id,
                index=index,
                rule=plan.branch_rules[(node.id, number)],
                profile_ids=[run.profile_id for run in left],
                now=moves.now,
            )
            rest = []
            for run in left:
                if holds.get(run.profile_id, False):
                    moves.move(run, branch.next, f"branch {number}")
                else:
                    rest.append(run)
            left = rest
        for run in left:
            moves.move(run, node.otherwise, "otherwise")


async def _wait(
    session: AsyncSession, node: WaitNode, runs: list[JourneyRun], moves: Moves
) -> list[JourneyRun]:
    """Runs arriving start the wait; runs whose wait is over go on; the runs that went on."""
    now = moves.now
    arriving = [run for run in runs if run.state == "active"]
    traits: Mapping[uuid.UUID, Mapping[str, Any]] = {}
    if arriving and isinstance(node.wait, TimeWait | DateWait):
        traits = await profiles.traits_by_id(
            session,
            workspace_id=runs[0].workspace_id,
            profile_ids=[run.profile_id for run in arriving],
        )
    went_on = []
    for run in runs:
        if run.state == "active":  # just arrived: start the wait
            moves.wait(run, wake_at(node.wait, traits.get(run.profile_id, {}), now))
        elif run.wake_at is not None and now < run.wake_at:
            moves.wake(run, run.wake_at)  # early: wait on
        else:
            timed_out = isinstance(node.wait, EventWait)
            target = node.timeout_next if timed_out and node.timeout_next else node.next
            moves.move(run, target, "timeout" if timed_out else "waited")
            went_on.append(run)
    return went_on


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


# --- Actions --------------------------------------------------------------------------------


async def _act(
    session: AsyncSession, node: ActionNode, runs: list[JourneyRun], moves: Moves, *, again: bool
) -> list[JourneyRun]:
    """Do the node's actions for the runs, by its mode; the runs that went on (the others
    failed, with the first failure as their reason). `again`: the node is on a loop, so a
    run may have been here before (its visits are counted for the actions' keys)."""
    failures: dict[int, str] = {}  # run id: its first failure
    succeeded: set[int] = set()  # runs with at least one action done
    keyed = any(not isinstance(action, TraitAction) for action in node.actions)
    visit = await _visits(session, node.id, runs, moves) if again and keyed else {}
    for number, action in enumerate(node.actions):
        if node.mode == "series":
            todo = [run for run in runs if run.id not in failures]
        elif node.mode == "priority":
            todo = [run for run in runs if run.id not in succeeded]
        else:
            todo = runs
        if not todo:
            break
        failed = await _do(session, node, number, action, todo, moves, visit)
        for run in todo:
            why = failed.get(run.id)
            if why is None:
                succeeded.add(run.id)
            else:
                failures.setdefault(run.id, f"action {number}: {why}")
    went_on = []
    for run in runs:
        ok = run.id in succeeded if node.mode == "priority" else run.id not in failures
        if ok:
            moves.move(run, node.next, "done")
            went_on.append(run)
        else:
            why = failures.get(run.id, "no action could be done")
            moves.finish(
                run, "failed", why if node.mode != "priority" else f"none succeeded: {why}"
            )
    return went_on


async def _do(
    session: AsyncSession,
    node: ActionNode,
    number: int,
    action: Action,
    runs: list[JourneyRun],
    moves: Moves,
    visit: Mapping[int, int],
) -> dict[int, str]:
    """Do action `number` of the node for the runs (on their `visit` to it, by run id);
    why it failed, by run id."""
    workspace_id = runs[0].workspace_id
    if isinstance(action, EmitAction | TraitAction):
        profile_ids = [run.profile_id for run in runs]
        senders = await profiles.sender_ids(
            session, workspace_id=workspace_id, profile_ids=profile_ids
        )
        templated = isinstance(action, TraitAction) and any(
            isinstance(value, str) and rendering.is_template(value)
            for value in action.traits.values()
        )
        traits = (
            await profiles.traits_by_id(session, workspace_id=workspace_id, profile_ids=profile_ids)
            if templated
            else {}
        )
        failed: dict[int, str] = {}
        for run in runs:
            user_id, anonymous_id = senders.get(run.profile_id, (None, None))
            if isinstance(action, EmitAction):
                visited = visit.get(run.id, 1)
                moves.events.append(
                    _event(run, node, number, action, user_id, anonymous_id, moves.now, visited)
                )
            elif user_id is None:
                failed[run.id] = "the profile has no user id to set traits on"
            else:
                try:
                    values = _trait_values(action, run, node, user_id, traits.get(run.profile_id))
                except RenderError as error:
                    failed[run.id] = str(error.detail)
                    continue
                refused = _refused_traits(values)
                if refused is not None:
                    failed[run.id] = refused
                    continue
                # As the API sets them (trait history kept, segments told); in a savepoint,
                # as a step may run in the events' transaction: refused values fail the run,
                # never the events.
                try:
                    async with session.begin_nested():
                        await profile_service.upsert_profile(
                            session, workspace_id=workspace_id, user_id=user_id,
                            traits=values, now=moves.now, source="api",
                            origin={"journey_id": run.journey_id, "journey_run_id": run.id},
                        )  # fmt: skip
                except ClarionError as error:
                    failed[run.id] = str(error.detail)
        return failed
    # A webhook is a message too: its template's body, signed and retried by delivery.
    try:
        template, version = await message_templates.current_version(
            session, workspace_id=workspace_id, template_id=action.template_id
        )
    except ClarionError as error:
        return dict.fromkeys((run.id for run in runs), error.detail)
    requests = moves.messages.setdefault(workspace_id, [])
    for run in runs:
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
                idempotency_key=(
                    f"journey:{run.id}:{node.id}:{number}{_nth(visit.get(run.id, 1))}"
                ),
                origin="journey",
                origin_id=str(run.journey_id),
                context={
                    **run.context,
                    "journey": {"id": run.journey_id, "run_id": run.id, "node": node.id},
                },
            )
        )
    return {}


async def _visits(
    session: AsyncSession, node_id: str, runs: Sequence[JourneyRun], moves: Moves
) -> dict[int, int]:
    """How many times each run has come to the node, this visit included (by run id): its
    transitions into the node from another node (or entering there), written or still in
    `moves`. A failure, a retry by hand or a retried step leaves the run where it was: the
    same visit."""
    ids = {run.id for run in runs}
    counted: Counter[int] = Counter()
    rows = await session.execute(
        select(JourneyTransition.run_id, func.count())
        .where(
            JourneyTransition.run_id.in_(ids),
            JourneyTransition.to_node == node_id,
            or_(JourneyTransition.from_node.is_(None), JourneyTransition.from_node != node_id),
        )
        .group_by(JourneyTransition.run_id)
    )
    for run_id, count in rows:
        counted[int(run_id)] += int(count)
    for row in moves.transitions:  # this step's moves, not written yet
        if row["run_id"] in ids and row["to_node"] == node_id and row["from_node"] != node_id:
            counted[row["run_id"]] += 1
    return {run_id: max(counted[run_id], 1) for run_id in ids}


def _nth(visit: int) -> str:
    """What an idempotency key ends in for this visit: nothing on the first (the keys of
    runs that passed a node before visits were counted stay the same)."""
    return "" if visit <= 1 else f":{visit}"


def _trait_values(
    action: TraitAction,
    run: JourneyRun,
    node: ActionNode,
    user_id: str,
    traits: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The traits a trait action sets on the run's profile: string values holding template
    syntax rendered with the profile, the run's triggering event and the journey."""
    variables = {
        "profile": {"id": str(run.profile_id), "user_id": user_id, "traits": dict(traits or {})},
        "event": run.context.get("event") or {},
        "journey": {"id": run.journey_id, "run_id": run.id, "node": node.id},
    }
    return {
        key: rendering.render_text(value, variables, field=f"traits.{key}")
        if isinstance(value, str) and rendering.is_template(value)
        else value
        for key, value in action.traits.items()
    }


def _refused_traits(values: Mapping[str, Any]) -> str | None:
    """Why the rendered traits cannot be set, if they cannot (publishing checks what it can
    before: a templated value is known only now, and an older version was published
    before some checks)."""
    for key, value in values.items():
        fault = trait_name_fault(key)
        if fault is not None:
            return f"{fault[0]}: {fault[1]}"
        problem = trait_value_fault(key, value)
        if problem is not None:
            return f"traits.{key}: {problem}"
    return None


def _event(
    run: JourneyRun,
    node: ActionNode,
    number: int,
    action: EmitAction,
    user_id: str | None,
    anonymous_id: str | None,
    now: datetime,
    visit: int,
) -> InternalEvent:
    """The track event an emit action sends about the run's profile (once per run, node,
    action and visit: its messageId says so)."""
    return InternalEvent(
        workspace_id=run.workspace_id,
        message_id=f"clarion:journey:{run.id}:{node.id}:{number}{_nth(visit)}",
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
