"""Routes: journeys (`/api/v1/journeys`): drafts, validation, publishing, pause, resume,
archive, the published versions, runs, statistics, the dry run and alerts."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status

from clarion.core.database import MAX_ROW_ID
from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession
from clarion.core.routing import StrictJSONRoute
from clarion.journeys import alerts, monitoring, service
from clarion.journeys import simulate as simulation
from clarion.journeys.compiler import InvalidJourney
from clarion.journeys.ready_made import READY_MADE, ready_made_draft
from clarion.journeys.schemas import (
    AlertPage,
    AlertRead,
    Fault,
    GraphCheck,
    GraphChecked,
    JourneyCreate,
    JourneyPage,
    JourneyRead,
    JourneyStats,
    JourneyUpdate,
    NodeTiming,
    ReadyMadeCreate,
    ReadyMadeRead,
    RunDetail,
    RunPage,
    RunRead,
    SimulateRequest,
    SimulationRead,
    State,
    TransitionRead,
    VersionRead,
)
from clarion.segments.catalog import Catalog
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1", tags=["journeys"], route_class=StrictJSONRoute)
Cursor = Annotated[str | None, Query(max_length=512)]
RunState = Literal["active", "waiting", "completed", "exited", "failed"]


@router.get("/journeys", response_model=JourneyPage)
async def list_journeys(
    caller: ManagementCaller,
    session: ReadSession,
    state: State | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JourneyPage:
    """The workspace's journeys by id (in one state when given)."""
    items, next_cursor = await service.list_journeys(
        session, workspace_id=caller.workspace_id, state=state, limit=limit, cursor=cursor
    )
    return JourneyPage(items=[JourneyRead.from_row(j) for j in items], next_cursor=next_cursor)


@router.post("/journeys", response_model=JourneyRead, status_code=status.HTTP_201_CREATED)
async def create_journey(
    body: JourneyCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> JourneyRead:
    """A new draft journey, saved as drawn (publishing checks it); 409 naming `name` when
    taken."""
    journey = await service.create_journey(
        session,
        workspace_id=caller.workspace_id,
        name=body.name,
        description=body.description,
        graph=body.graph,
        now=clock.now(),
    )
    await session.commit()
    return JourneyRead.from_row(journey)


@router.get("/journeys/ready-made", response_model=list[ReadyMadeRead])
async def list_ready_made(caller: ManagementCaller) -> list[ReadyMadeRead]:
    """The ready-made journeys: abandoned cart, birthday, welcome series, win-back."""
    return [
        ReadyMadeRead(
            kind=kind,
            name=r.name,
            description=r.description,
            templates=r.templates,
            needs_segment=r.needs_segment,
        )
        for kind, r in READY_MADE.items()
    ]


@router.post(
    "/journeys/ready-made", response_model=JourneyRead, status_code=status.HTTP_201_CREATED
)
async def create_from_ready_made(
    body: ReadyMadeCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> JourneyRead:
    """A draft journey made from a ready-made one with these templates (and segment), to
    review and publish; 400 naming `kind`, `template_ids` or `segment_id`, 409 `name`."""
    graph = await ready_made_draft(
        session, workspace_id=caller.workspace_id, kind=body.kind,
        template_ids=body.template_ids, segment_id=body.segment_id,
        days_before=body.days_before,
    )  # fmt: skip
    journey = await service.create_journey(
        session,
        workspace_id=caller.workspace_id,
        name=body.name or READY_MADE[body.kind].name,
        description=READY_MADE[body.kind].description,
        graph=graph,
        now=clock.now(),
    )
    await session.commit()
    return JourneyRead.from_row(journey)


@router.get("/journeys/alerts", response_model=AlertPage)
async def list_alerts(
    caller: ManagementCaller,
    session: ReadSession,
    state: Literal["open", "resolved"] | None = None,
    journey_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertPage:
    """The workspace's journey alerts, newest first (open or resolved, of one journey,
    when given)."""
    found = await alerts.list_alerts(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, state=state,
        limit=limit,
    )  # fmt: skip
    return AlertPage(
        items=[AlertRead.model_validate(alerts.alert_document(a, j)) for a, j in found]
    )


@router.post("/journeys/validate", response_model=GraphChecked)
async def validate_graph(
    body: GraphCheck, caller: ManagementCaller, session: ReadSession
) -> GraphChecked:
    """Whether the graph would publish in this workspace now, with every fault under its
    node's id; nothing saved."""
    try:
        await service.check_graph(session, workspace_id=caller.workspace_id, graph=body.graph)
    except InvalidJourney as error:
        faults = [Fault(field=e.field, message=e.message) for e in error.errors]
        return GraphChecked(valid=False, errors=faults)
    return GraphChecked(valid=True, errors=[])


@router.get("/journeys/{journey_id}", response_model=JourneyRead)
async def read_journey(
    journey_id: RowId, caller: ManagementCaller, session: ReadSession
) -> JourneyRead:
    """One journey."""
    journey = await service.get_journey_or_raise(
        session, workspace_id=caller.workspace_id, journey_id=journey_id
    )
    return JourneyRead.from_row(journey)


@router.patch("/journeys/{journey_id}", response_model=JourneyRead)
async def update_journey(
    journey_id: RowId,
    body: JourneyUpdate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> JourneyRead:
    """Change the draft, name or description (runs follow the draft only once published);
    409 naming `state` for an archived journey, `name` when taken."""
    journey = await service.update_journey(
        session,
        workspace_id=caller.workspace_id,
        journey_id=journey_id,
        name=body.name,
        description=body.description,
        graph=body.graph,
        now=clock.now(),
    )
    await session.commit()
    return JourneyRead.from_row(journey)


@router.post("/journeys/{journey_id}/publish", response_model=VersionRead)
async def publish_journey(
    journey_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> VersionRead:
    """Compile the draft into the next version, which new entries follow; 400 listing every
    fault under its node's id, 409 naming `state` for a paused or archived journey."""
    version = await service.publish_journey(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, now=clock.now()
    )
    await session.commit()
    return VersionRead.from_row(version)


async def _change(
    action: Literal["pause", "resume", "archive"],
    journey_id: int,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> JourneyRead:
    journey = await service.change_state(
        session,
        workspace_id=caller.workspace_id,
        journey_id=journey_id,
        action=action,
        now=clock.now(),
    )
    await session.commit()
    return JourneyRead.from_row(journey)


@router.post("/journeys/{journey_id}/pause", response_model=JourneyRead)
async def pause_journey(
    journey_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> JourneyRead:
    """Stop new entries and hold runs where they are; 409 naming `state` unless live."""
    return await _change("pause", journey_id, caller, session, clock)


@router.post("/journeys/{journey_id}/resume", response_model=JourneyRead)
async def resume_journey(
    journey_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> JourneyRead:
    """Let entries in and runs move again; 409 naming `state` unless paused."""
    return await _change("resume", journey_id, caller, session, clock)


@router.post("/journeys/{journey_id}/archive", response_model=JourneyRead)
async def archive_journey(
    journey_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> JourneyRead:
    """End the journey for good; 409 naming `state` when already archived."""
    return await _change("archive", journey_id, caller, session, clock)


@router.get("/journeys/{journey_id}/versions", response_model=list[VersionRead])
async def list_versions(
    journey_id: RowId, caller: ManagementCaller, session: ReadSession
) -> list[VersionRead]:
    """The journey's published versions, newest first."""
    versions = await service.list_versions(
        session, workspace_id=caller.workspace_id, journey_id=journey_id
    )
    return [VersionRead.from_row(v) for v in versions]


@router.get("/journeys/{journey_id}/runs", response_model=RunPage)
async def list_runs(
    journey_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    state: RunState | None = None,
    node: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RunPage:
    """The journey's runs, newest first (in one state, at one node when given)."""
    items, next_cursor = await monitoring.list_runs(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, state=state,
        node=node, limit=limit, cursor=cursor,
    )  # fmt: skip
    return RunPage(items=[RunRead.model_validate(r) for r in items], next_cursor=next_cursor)


@router.get("/journeys/{journey_id}/runs/{run_id}", response_model=RunDetail)
async def read_run(
    journey_id: RowId, run_id: RowId, caller: ManagementCaller, session: ReadSession
) -> RunDetail:
    """One run with every move it made, oldest first."""
    run, moves = await monitoring.get_run_or_raise(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, run_id=run_id
    )
    return RunDetail(
        **RunRead.model_validate(run).model_dump(),
        transitions=[TransitionRead.model_validate(m) for m in moves],
    )


@router.get("/journeys/{journey_id}/stats", response_model=JourneyStats)
async def journey_stats(
    journey_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> JourneyStats:
    """Per version (only `version` when given; 404 for one never published) and node: its
    runs that reached the node (a funnel from the trigger down) and runs there now by
    state."""
    return await monitoring.journey_stats(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, version=version
    )


@router.get("/journeys/{journey_id}/timing", response_model=NodeTiming)
async def node_timing(
    journey_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    from_node: Annotated[str, Query(min_length=1, max_length=64)],
    to_node: Annotated[str, Query(min_length=1, max_length=64)],
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> NodeTiming:
    """Median and 90th percentile of the time from reaching one node to reaching another,
    over the runs of every version (only `version`'s when given; 404 for one never
    published); 404 naming `from_node` / `to_node` for a node the journey (that version)
    lacks."""
    return await monitoring.node_timing(
        session, workspace_id=caller.workspace_id, journey_id=journey_id,
        from_node=from_node, to_node=to_node, version=version,
    )  # fmt: skip


@router.get("/journeys/{journey_id}/alerts", response_model=AlertPage)
async def journey_alerts(
    journey_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    state: Literal["open", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertPage:
    """The journey's alerts, newest first."""
    await service.get_journey_or_raise(
        session, workspace_id=caller.workspace_id, journey_id=journey_id
    )
    found = await alerts.list_alerts(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, state=state,
        limit=limit,
    )  # fmt: skip
    return AlertPage(
        items=[AlertRead.model_validate(alerts.alert_document(a, j)) for a, j in found]
    )


@router.get("/profiles/{profile_id}/journeys", response_model=list[RunRead])
async def profile_journeys(
    profile_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> list[RunRead]:
    """A profile's journey history: its runs, newest first; a merged-away id answers the
    profile it was merged into, 404 for a profile the workspace lacks."""
    items, _ = await monitoring.list_runs(
        session, workspace_id=caller.workspace_id, profile_id=profile_id, limit=1_000,
        cursor=None,
    )  # fmt: skip
    return [RunRead.model_validate(r) for r in items]


@router.post("/journeys/{journey_id}/simulate", response_model=SimulationRead)
async def simulate_journey(
    journey_id: RowId,
    body: SimulateRequest,
    caller: ManagementCaller,
    session: ReadSession,
    request: Request,
) -> SimulationRead:
    """The path the draft would take for a real or described profile given timed events,
    and the messages it would send, without writing or sending anything; 400 listing the
    draft's faults when it would not publish, 404 for a profile the workspace lacks."""
    journey = await service.get_journey_or_raise(
        session, workspace_id=caller.workspace_id, journey_id=journey_id
    )
    plan = await service.check_graph(session, workspace_id=caller.workspace_id, graph=journey.draft)
    catalog: Catalog = request.app.state.segment_catalog
    result = await simulation.simulate(
        session,
        workspace_id=caller.workspace_id,
        journey_id=journey.id,
        plan=plan,
        index=await catalog.load(session, caller.workspace_id),
        profile_id=body.profile_id,
        traits=body.traits,
        events=[
            simulation.SimulatedEvent(
                e.event, e.at, e.properties, e.received_at, e.context, source=e.source
            )
            for e in body.events
        ],
    )
    return SimulationRead.model_validate(dataclasses.asdict(result))


async def _take_up(
    journey_id: int, run_id: int, caller: ManagementCaller, session: WriteSession,
    clock: AppClock, *, skip: bool,
) -> RunRead:  # fmt: skip
    run = await monitoring.retry_or_skip_run(
        session, workspace_id=caller.workspace_id, journey_id=journey_id, run_id=run_id,
        skip=skip, now=clock.now(),
    )  # fmt: skip
    await session.commit()
    return RunRead.model_validate(run)


@router.post("/journeys/{journey_id}/runs/{run_id}/retry", response_model=RunRead)
async def retry_run(
    journey_id: RowId, run_id: RowId, caller: ManagementCaller, session: WriteSession,
    clock: AppClock,
) -> RunRead:  # fmt: skip
    """Take a failed run up again at the action that failed; 409 naming `state` unless it
    failed (and the journey is live)."""
    return await _take_up(journey_id, run_id, caller, session, clock, skip=False)


@router.post("/journeys/{journey_id}/runs/{run_id}/skip", response_model=RunRead)
async def skip_run(
    journey_id: RowId, run_id: RowId, caller: ManagementCaller, session: WriteSession,
    clock: AppClock,
) -> RunRead:  # fmt: skip
    """Move a failed run past the action that failed; 409 naming `state` unless it failed
    (and the journey is live)."""
    return await _take_up(journey_id, run_id, caller, session, clock, skip=True)
