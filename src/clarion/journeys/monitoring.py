"""What a journey's runs show: runs of a journey or a profile, one run and its moves, stats
per node (a funnel) and the time between two nodes; and retrying or skipping a failed run.
Apart from `service.py` (journeys themselves: drafts, publishing, states, what they use)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.pagination import id_page
from clarion.journeys import runtime, steps
from clarion.journeys.graph import ActionNode, WaitNode
from clarion.journeys.models import Journey, JourneyRun, JourneyTransition, JourneyVersion
from clarion.journeys.schemas import JourneyStats, NodeStats, NodeTiming
from clarion.journeys.service import get_journey_or_raise, graph_nodes
from clarion.profiles import queries as profiles


async def list_runs(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int | None = None,
    profile_id: uuid.UUID | None = None,
    state: str | None = None,
    node: str | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[JourneyRun], str | None]:
    """Runs of a journey or of a profile (in one state, at one node when given), newest
    first, cursor-paged; NotFound for a journey or a profile the workspace lacks (a
    merged-away profile's runs are those of the profile it went into: theirs now), or a
    `node` neither the journey's draft nor any of its versions has."""
    if journey_id is not None:
        journey = await get_journey_or_raise(
            session, workspace_id=workspace_id, journey_id=journey_id
        )
        if node is not None and node not in await _node_ids(session, journey, None):
            raise NotFound(
                f"Journey {journey.id} has no node {node!r}.",
                errors=[FieldError("node", f"no node {node!r}")],
            )
    if profile_id is not None:
        profile = await profiles.get_profile_or_raise(
            session, workspace_id=workspace_id, profile_id=profile_id
        )
        profile_id = profile.id
    query = select(JourneyRun).where(JourneyRun.workspace_id == workspace_id)
    if journey_id is not None:
        query = query.where(JourneyRun.journey_id == journey_id)
    if profile_id is not None:
        query = query.where(JourneyRun.profile_id == profile_id)
    if state is not None:
        query = query.where(JourneyRun.state == state)
    if node is not None:
        query = query.where(JourneyRun.node == node)
    return await id_page(
        session, query, JourneyRun.id, limit=limit, cursor=cursor, newest_first=True
    )


async def get_run_or_raise(
    session: AsyncSession, *, workspace_id: int, journey_id: int, run_id: int
) -> tuple[JourneyRun, Sequence[JourneyTransition]]:
    """A run of the journey and its moves, oldest first; NotFound otherwise."""
    run = await session.scalar(
        select(JourneyRun).where(
            JourneyRun.workspace_id == workspace_id,
            JourneyRun.journey_id == journey_id,
            JourneyRun.id == run_id,
        )
    )
    if run is None:
        raise NotFound(f"No run {run_id} in journey {journey_id}.")
    moves = await session.scalars(
        select(JourneyTransition)
        .where(JourneyTransition.run_id == run.id)
        .order_by(JourneyTransition.id)
    )
    return run, moves.all()


async def journey_stats(
    session: AsyncSession, *, workspace_id: int, journey_id: int, version: int | None = None
) -> JourneyStats:
    """Per version (only `version`, when given) and node of its graph: runs on that version
    that reached the node, and its runs there now by state; totals over the same runs. A
    version's node rows add up to its runs, as each run stays on the version it entered.
    NotFound for a journey the workspace lacks or a version it never published."""
    journey = await get_journey_or_raise(session, workspace_id=workspace_id, journey_id=journey_id)
    runs_of = [JourneyRun.journey_id == journey.id]
    drawn: list[tuple[int | None, str, str]] | None = None
    if version is not None:  # first: a version never published is a 404 before any count
        drawn = await _graph_nodes(session, journey, version)
        runs_of.append(JourneyRun.version == version)
    reached = {
        (int(number), str(node)): int(count)
        for number, node, count in await session.execute(
            select(
                JourneyRun.version,
                JourneyTransition.to_node,
                func.count(distinct(JourneyTransition.run_id)),
            )
            .join(JourneyRun, JourneyRun.id == JourneyTransition.run_id)
            .where(JourneyTransition.journey_id == journey.id, *runs_of)
            .group_by(JourneyRun.version, JourneyTransition.to_node)
        )
    }
    now_at: dict[tuple[int, str, str], int] = {}
    for number, node, state, count in await session.execute(
        select(JourneyRun.version, JourneyRun.node, JourneyRun.state, func.count())
        .where(*runs_of)
        .group_by(JourneyRun.version, JourneyRun.node, JourneyRun.state)
    ):
        now_at[(int(number), str(node), str(state))] = int(count)
    states: dict[str, int] = {}
    for (_, _, state), count in now_at.items():
        states[state] = states.get(state, 0) + count
    if drawn is None:  # every version runs are on and the live one
        among = {number for number, _, _ in now_at}
        if journey.live_version is not None:
            among.add(journey.live_version)
        drawn = await _graph_nodes(session, journey, None, among=among)
    converted = await session.scalar(
        select(func.count()).where(*runs_of, JourneyRun.converted_at.is_not(None))
    )
    return JourneyStats(
        runs=sum(states.values()),
        states=states,
        converted=int(converted or 0),
        # A draft's rows (version None) have no runs: 0 is no version's number.
        nodes=[
            NodeStats(
                version=number,
                node=node_id,
                type=kind,
                entered=reached.get((number or 0, node_id), 0),
                **{s: now_at.get((number or 0, node_id, s), 0) for s in _RUN_STATES},
            )
            for number, node_id, kind in drawn
        ],
    )


async def node_timing(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int,
    from_node: str,
    to_node: str,
    version: int | None = None,
) -> NodeTiming:
    """The median and 90th percentile of the time runs (of every version, or of `version`
    only, as `journey_stats`) took from their first arrival at `from_node` to their first
    arrival at `to_node`. NotFound for a journey the workspace lacks, a version it never
    published, or a node neither its draft nor any version (that version) has, naming
    `from_node` / `to_node`."""
    journey = await get_journey_or_raise(session, workspace_id=workspace_id, journey_id=journey_id)
    known = await _node_ids(session, journey, version)
    unknown = [
        (p, n) for p, n in (("from_node", from_node), ("to_node", to_node)) if n not in known
    ]
    if unknown:
        where = f" in version {version}" if version is not None else ""
        raise NotFound(
            f"Journey {journey.id} has no node "
            f"{' nor '.join(map(repr, dict.fromkeys(n for _, n in unknown)))}{where}.",
            errors=[FieldError(p, f"no node {n!r}{where}") for p, n in unknown],
        )
    query = (
        select(JourneyTransition.run_id, JourneyTransition.to_node, func.min(JourneyTransition.at))
        .where(
            JourneyTransition.journey_id == journey.id,
            JourneyTransition.to_node.in_((from_node, to_node)),
        )
        .group_by(JourneyTransition.run_id, JourneyTransition.to_node)
    )
    if version is not None:
        query = query.join(JourneyRun, JourneyRun.id == JourneyTransition.run_id).where(
            JourneyRun.version == version
        )
    first: dict[tuple[int, str], datetime] = {}
    for run_id, node, at in await session.execute(query):
        first[(int(run_id), str(node))] = at
    spans = sorted(
        (first[(run_id, to_node)] - at).total_seconds()
        for (run_id, node), at in first.items()
        if node == from_node and (run_id, to_node) in first
    )
    return NodeTiming(
        version=version,
        from_node=from_node,
        to_node=to_node,
        runs=len(spans),
        p50_seconds=_quantile(spans, 0.5),
        p90_seconds=_quantile(spans, 0.9),
    )


_RUN_STATES = ("active", "waiting", "completed", "exited", "failed")


async def _node_ids(session: AsyncSession, journey: Journey, version: int | None) -> set[str]:
    """The ids of the nodes of `version` (NotFound when the journey has none such), else of
    every published version and the draft."""
    return {node for _, node, _ in await _graph_nodes(session, journey, version)}


async def _graph_nodes(
    session: AsyncSession,
    journey: Journey,
    version: int | None,
    *,
    among: Collection[int] | None = None,
) -> list[tuple[int | None, str, str]]:
    """(version, id, type) of the nodes of `version` (NotFound when the journey has none
    such), else of its published versions numbered `among` (every one when None), oldest
    first, then of the draft (version None) when `among` is None or names no version; each
    graph's nodes in its order."""
    query = select(JourneyVersion.number, JourneyVersion.graph).where(
        JourneyVersion.journey_id == journey.id
    )
    if version is not None:
        query = query.where(JourneyVersion.number == version)
    elif among is not None:
        query = query.where(JourneyVersion.number.in_(among))
    graphs: list[tuple[int | None, Any]] = [
        (int(number), graph)
        for number, graph in await session.execute(query.order_by(JourneyVersion.number))
    ]
    if version is not None and not graphs:
        raise NotFound(f"Journey {journey.id} has no version {version}.")
    if version is None and (among is None or not graphs):
        graphs.append((None, journey.draft))
    return [
        (number, str(node.get("id")), str(node.get("type")))
        for number, graph in graphs
        for node in (graph_nodes(graph) if isinstance(graph, dict) else [])
    ]


def _quantile(ordered: list[float], q: float) -> float | None:
    """The q-quantile of sorted values (linear between neighbours); None when empty."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def retry_or_skip_run(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int,
    run_id: int,
    skip: bool,
    now: datetime,
) -> JourneyRun:
    """A failed run taken up again at the node that failed (`skip`: at the node after it),
    by a person; Conflict naming `state` unless the run failed (at an action, or after a
    wait) in a live journey, or when another run of its key is live now. Flushes only."""
    journey = await get_journey_or_raise(session, workspace_id=workspace_id, journey_id=journey_id)
    run, _ = await get_run_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, run_id=run_id
    )
    if run.state != "failed" or journey.state != "live":
        what = f"run is {run.state}" if run.state != "failed" else f"journey is {journey.state}"
        raise Conflict(
            f"Only a failed run of a live journey can be retried or skipped; the {what}.",
            errors=[FieldError("state", f"is {run.state}")],
        )
    plan = await steps.version_plan(session, journey.id, run.version)
    node = plan.nodes[run.node]
    target = node.next if skip and isinstance(node, ActionNode | WaitNode) else run.node
    # A run fails at a wait only once the wait is over (the step after it raised): taken up
    # again there, it goes on at once instead of waiting again.
    resumed_wait = isinstance(node, WaitNode) and target == run.node
    session.add(
        JourneyTransition(
            workspace_id=workspace_id, journey_id=journey.id, run_id=run.id, from_node=run.node,
            to_node=target, reason="skipped by hand" if skip else "retried by hand", at=now,
        )
    )  # fmt: skip
    run.state, run.node, run.reason, run.finished_at, run.updated_at = (
        "waiting" if resumed_wait else "active", target, None, None, now
    )  # fmt: skip
    run.wake_at = now if resumed_wait else None
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            "Another run of this entry key is live: it cannot be taken up again.",
            errors=[FieldError("state", "another run of the key is live")],
        ) from error
    await runtime.schedule_step(session, run, now)
    return run
