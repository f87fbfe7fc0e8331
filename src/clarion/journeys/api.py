"""Routes: journeys (`/api/v1/journeys`): drafts, validation, publishing, pause, resume,
archive, and the published versions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession
from clarion.journeys import service
from clarion.journeys.compiler import InvalidJourney
from clarion.journeys.schemas import (
    Fault,
    GraphCheck,
    GraphChecked,
    JourneyCreate,
    JourneyPage,
    JourneyRead,
    JourneyUpdate,
    State,
    VersionRead,
)
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1", tags=["journeys"])
Cursor = Annotated[str | None, Query(max_length=512)]


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
