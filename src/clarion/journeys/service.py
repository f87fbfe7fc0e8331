"""Journeys: drafts, validation, publishing versions, and the states.

    draft ──publish──► live ──pause──► paused ──resume──► live
      │                 │ ▲                │
      │                 └─┘ publish        │
      └───────────── archive ◄─────────────┘   (from any state but archived)

Publishing compiles the draft against the workspace's segments, templates and channels
(`compiler.py`) and stores it as the next version, which new entries then follow; a paused
or archived journey cannot be published (resume it first). Anything else out of turn is a
Conflict naming `state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core import errors
from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.recurring import schedule_recurring_job
from clarion.core.pagination import id_page
from clarion.journeys import alerts, runtime
from clarion.journeys.compiler import Plan, References, compile_journey
from clarion.journeys.graph import DateTrigger, ScheduleTrigger
from clarion.journeys.models import (
    LIVE_RUN_STATES,
    Journey,
    JourneyRun,
    JourneyVersion,
)
from clarion.messaging import channel_config
from clarion.messaging import templates as message_templates
from clarion.segments import service as segments

ALLOWED: dict[str, frozenset[str]] = {
    "edit": frozenset({"draft", "live", "paused"}),
    "publish": frozenset({"draft", "live"}),
    "pause": frozenset({"live"}),
    "resume": frozenset({"paused"}),
    "archive": frozenset({"draft", "live", "paused"}),
}
_DONE = {
    "edit": "edited",
    "publish": "published",
    "pause": "paused",
    "resume": "resumed",
    "archive": "archived",
}


def require_state(journey: Journey, action: str) -> None:
    """Conflict naming `state` unless the journey's state allows `action`."""
    errors.require_state("journey", journey.state, action, ALLOWED, _DONE)


async def journeys_using_segment(
    session: AsyncSession, workspace_id: int, segment_id: int
) -> list[str]:
    """The live and paused journeys that still need the segment: their published version
    names it (a trigger on entering or leaving it, a branch on membership), or a version
    their live runs are still on branches on it; as "journey N (name)" (see `_naming`)."""

    def names(graph: dict[str, Any], published: bool) -> bool:
        # Only the published version's trigger enters anyone: older versions' runs are past
        # theirs.
        return any(
            _names_segment(node, segment_id)
            for node in graph_nodes(graph)
            if published or node.get("type") != "trigger"
        )

    return await _naming(session, workspace_id, names)


async def journeys_using_channel(
    session: AsyncSession, workspace_id: int, channel_id: int
) -> list[str]:
    """The live and paused journeys that still send through the channel: as a send or
    webhook step's `channel_id` in their published version or in a version their live runs
    are still on, or as the published version's alert webhook (`alerts.channel_id`); as
    "journey N (name)" (see `_naming`). A send step naming no channel goes through its
    template kind's default channel, whichever that is when it sends: it holds no channel
    back."""

    def names(graph: dict[str, Any], published: bool) -> bool:
        alerts_to = (graph.get("alerts") or {}).get("channel_id") if published else None
        return channel_id == alerts_to or any(
            action.get("channel_id") == channel_id for action in _actions(graph)
        )

    return await _naming(session, workspace_id, names)


async def journeys_using_template(
    session: AsyncSession, workspace_id: int, template_id: int
) -> list[str]:
    """The live and paused journeys that still send the template (a send or webhook step's
    `template_id`) in their published version or in a version their live runs are still
    on; as "journey N (name)" (see `_naming`)."""

    def names(graph: dict[str, Any], published: bool) -> bool:
        return any(action.get("template_id") == template_id for action in _actions(graph))

    return await _naming(session, workspace_id, names)


async def _naming(
    session: AsyncSession,
    workspace_id: int,
    names: Callable[[dict[str, Any], bool], bool],
) -> list[str]:
    """The live and paused journeys, by id, with a version still at work (the published
    one, which new entries follow, or one live runs are on) whose graph `names` (called
    with the graph and whether it is the published one): "journey N (name)" when the
    published version does, else "journey N (name) for its runs on version V" (runs stay
    on the version they entered, and go on after another is published)."""
    on_it = (
        select(JourneyRun.id)
        .where(
            JourneyRun.journey_id == JourneyVersion.journey_id,
            JourneyRun.version == JourneyVersion.number,
            JourneyRun.state.in_(LIVE_RUN_STATES),
        )
        .exists()
    )
    rows = await session.execute(
        select(
            Journey.id,
            Journey.name,
            (JourneyVersion.number == Journey.live_version).label("published"),
            JourneyVersion.number,
            JourneyVersion.graph,
        )
        .join(JourneyVersion, JourneyVersion.journey_id == Journey.id)
        .where(
            Journey.workspace_id == workspace_id,
            Journey.state.in_(("live", "paused")),
            or_(JourneyVersion.number == Journey.live_version, on_it),
        )
        .order_by(Journey.id, JourneyVersion.number)
    )
    found: dict[int, tuple[str, bool, list[int]]] = {}
    for journey_id, name, published, number, graph in rows:
        # Read as stored (the shape `graph.py` draws, checked when it was published), not
        # validated again: a rule tightened since must not make anything undeletable.
        if isinstance(graph, dict) and names(graph, bool(published)):
            _, live, numbers = found.setdefault(journey_id, (name, False, []))
            found[journey_id] = (name, live or bool(published), [*numbers, number])
    return [
        f"journey {journey_id} ({name})"
        if live
        else f"journey {journey_id} ({name}) for its runs on"
        f" version{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
        for journey_id, (name, live, numbers) in found.items()
    ]


def graph_nodes(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """The graph's nodes as stored (whatever is no node left out)."""
    nodes = graph.get("nodes")
    return [node for node in nodes if isinstance(node, dict)] if isinstance(nodes, list) else []


def _actions(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """The graph's send and webhook actions as stored: what names a template and a channel."""
    return [
        action
        for node in graph_nodes(graph)
        if node.get("type") == "action"
        for action in node.get("actions") or ()
        if isinstance(action, dict) and action.get("kind") in ("send", "webhook")
    ]


def _names_segment(document: Any, segment_id: int) -> bool:
    """Whether a graph, anywhere in it, names the segment (`"segment_id": N`)."""
    return segment_id in _segment_ids(document)


async def _hold_references(session: AsyncSession, workspace_id: int, graph: Any) -> None:
    """Hold (on PostgreSQL, until the transaction ends) the segments, templates and
    channels the graph names, as `journeys_using_*` read them, before they are checked: a
    delete or archive of one of them either waits for this publish and then sees the
    journey (409), or goes first and the check finds it gone. Always in this order, each
    in id order, so that publishes and deletes take them alike."""
    if not isinstance(graph, dict):
        return
    actions = _actions(graph)
    alerts = graph.get("alerts")
    alerts_to = alerts.get("channel_id") if isinstance(alerts, dict) else None
    await segments.hold_segments(
        session, workspace_id=workspace_id, segment_ids=_segment_ids(graph)
    )
    await message_templates.hold_templates(
        session, workspace_id=workspace_id, template_ids=_ids(a.get("template_id") for a in actions)
    )
    await channel_config.hold_channels(
        session,
        workspace_id=workspace_id,
        channel_ids=_ids([alerts_to, *(a.get("channel_id") for a in actions)]),
    )


def _ids(values: Iterable[Any]) -> set[int]:
    """The integers among `values` (what a valid graph names things by)."""
    return {v for v in values if isinstance(v, int) and not isinstance(v, bool)}


def _segment_ids(document: Any) -> set[int]:
    """Every `"segment_id": N` anywhere in a graph."""
    found: list[Any] = []
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            found.append(value.get("segment_id"))
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return _ids(found)


async def references(session: AsyncSession, *, workspace_id: int) -> References:
    """What of the workspace a journey may name."""
    return References(
        segments=await segments.segment_ids(session, workspace_id=workspace_id),
        templates=await message_templates.live_template_channels(
            session, workspace_id=workspace_id
        ),
        channels=await channel_config.channel_kinds(session, workspace_id=workspace_id),
    )


async def check_graph(session: AsyncSession, *, workspace_id: int, graph: Any) -> Plan:
    """The graph's plan against the workspace now; InvalidJourney naming every fault."""
    known = await references(session, workspace_id=workspace_id)
    return compile_journey(graph, known)


async def create_journey(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    description: str,
    graph: dict[str, Any],
    now: datetime,
) -> Journey:
    """A new draft (saved as drawn, valid or not); Conflict naming `name` when taken.
    Flushes only."""
    journey = Journey(
        workspace_id=workspace_id,
        name=name,
        description=description,
        state="draft",
        draft=graph,
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    await _flush_named(session, name)
    return journey


async def update_journey(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int,
    name: str | None = None,
    description: str | None = None,
    graph: dict[str, Any] | None = None,
    now: datetime,
) -> Journey:
    """The journey with its draft changed (what runs changes only when published).
    Flushes only."""
    journey = await get_journey_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, lock=True
    )
    require_state(journey, "edit")
    if name is not None:
        journey.name = name
    if description is not None:
        journey.description = description
    if graph is not None:
        journey.draft = graph
    journey.updated_at = now
    await _flush_named(session, journey.name)
    return journey


async def publish_journey(
    session: AsyncSession, *, workspace_id: int, journey_id: int, now: datetime
) -> JourneyVersion:
    """Compile the draft and make it the live version; InvalidJourney naming every fault
    (nothing saved), Conflict naming `state` for a paused or archived journey. Flushes
    only."""
    journey = await get_journey_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, lock=True
    )
    require_state(journey, "publish")
    await _hold_references(session, workspace_id, journey.draft)
    plan = await check_graph(session, workspace_id=workspace_id, graph=journey.draft)
    last = await session.scalar(
        select(func.max(JourneyVersion.number)).where(JourneyVersion.journey_id == journey.id)
    )
    version = JourneyVersion(
        workspace_id=workspace_id,
        journey_id=journey.id,
        number=(last or 0) + 1,
        graph=journey.draft,
        plan=plan.document(),
        published_at=now,
    )
    session.add(version)
    journey.state = "live"
    journey.live_version = version.number
    journey.updated_at = now
    await session.flush()
    trigger = plan.trigger.trigger
    if isinstance(trigger, ScheduleTrigger | DateTrigger):
        kind, cron = (
            (runtime.SCHEDULE, trigger.cron)
            if isinstance(trigger, ScheduleTrigger)
            else (runtime.DATES, runtime.DATES_CRON)
        )
        payload = {"journey_id": journey.id}
        await schedule_recurring_job(
            session, workspace_id=workspace_id, name=f"journey:{journey.id}", kind=kind,
            cron=cron, payload=payload, priority=runtime.TICK_PRIORITY, now=now,
        )  # fmt: skip
        if kind == runtime.DATES:  # today's dates too, not only from the next midnight on
            await enqueue(
                session,
                [NewJob(workspace_id, kind, payload, priority=runtime.TICK_PRIORITY)],
                now=now,
            )
    # Alerts watch every live journey of the workspace: one check for them all.
    await schedule_recurring_job(
        session, workspace_id=workspace_id, name=alerts.CHECK_NAME, kind=alerts.CHECK,
        cron=alerts.CHECK_CRON, priority=runtime.TICK_PRIORITY, now=now,
    )  # fmt: skip
    return version


async def change_state(
    session: AsyncSession, *, workspace_id: int, journey_id: int, action: str, now: datetime
) -> Journey:
    """Pause, resume or archive the journey; Conflict naming `state` out of turn. Flushes
    only."""
    journey = await get_journey_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, lock=True
    )
    require_state(journey, action)
    journey.state = {"pause": "paused", "resume": "live", "archive": "archived"}[action]
    journey.updated_at = now
    await session.flush()
    if action == "resume":  # held runs move on
        await runtime.resume_runs(session, journey_id=journey.id, now=now)
    elif action == "archive":
        await runtime.end_runs(session, journey_id=journey.id, reason="journey archived", now=now)
    return journey


async def get_journey_or_raise(
    session: AsyncSession, *, workspace_id: int, journey_id: int, lock: bool = False
) -> Journey:
    """The workspace's journey; NotFound otherwise."""
    query = select(Journey).where(Journey.workspace_id == workspace_id, Journey.id == journey_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    journey = await session.scalar(query)
    if journey is None:
        raise NotFound(f"No journey {journey_id} in this workspace.")
    return journey


async def get_journey_by_name(
    session: AsyncSession, *, workspace_id: int, name: str
) -> Journey | None:
    """The workspace's journey called `name`, if any."""
    return await session.scalar(
        select(Journey).where(Journey.workspace_id == workspace_id, Journey.name == name)
    )


async def list_journeys(
    session: AsyncSession,
    *,
    workspace_id: int,
    state: str | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Journey], str | None]:
    """The workspace's journeys by id (in one state when given), cursor-paged."""
    query = select(Journey).where(Journey.workspace_id == workspace_id)
    if state is not None:
        query = query.where(Journey.state == state)
    return await id_page(session, query, Journey.id, limit=limit, cursor=cursor)


async def list_versions(
    session: AsyncSession, *, workspace_id: int, journey_id: int
) -> Sequence[JourneyVersion]:
    """The journey's published versions, newest first."""
    await get_journey_or_raise(session, workspace_id=workspace_id, journey_id=journey_id)
    rows = await session.scalars(
        select(JourneyVersion)
        .where(JourneyVersion.journey_id == journey_id)
        .order_by(JourneyVersion.number.desc())
    )
    return rows.all()


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A journey called {name!r} already exists.",
            errors=[FieldError("name", "is taken by another journey")],
        ) from error
