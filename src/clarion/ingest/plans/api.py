"""Management routes: tracking plans (`/api/v1/tracking-plans`) and their violations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession, app_held
from clarion.core.routing import StrictJSONRoute
from clarion.core.schemas import Instant
from clarion.core.settings import Settings
from clarion.ingest.plans import service
from clarion.ingest.plans.cache import announce_change
from clarion.ingest.plans.schemas import (
    TrackingPlanCreate,
    TrackingPlanPage,
    TrackingPlanRead,
    TrackingPlanUpdate,
    ViolationKind,
    ViolationPage,
    ViolationRead,
)
from clarion.ingest.plans.secrets import HeaderVault
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(
    prefix="/api/v1/tracking-plans", tags=["tracking plans"], route_class=StrictJSONRoute
)


def _headers(request: Request) -> HeaderVault:
    """The app's vault for enrichment header values (one per app)."""
    return app_held(
        request, "enrichment_headers", lambda: HeaderVault(request.app.state.secret_keys)
    )


async def _announce(request: Request, workspace_id: int) -> None:
    settings: Settings = request.app.state.settings
    await announce_change(settings, workspace_id)


@router.get("/violations", response_model=ViolationPage)
async def list_violations(
    caller: ManagementCaller,
    session: ReadSession,
    event: Annotated[str | None, Query(max_length=255, description="Event name.")] = None,
    kind: ViolationKind | None = None,
    since: Annotated[Instant | None, Query(description="Recorded at or after.")] = None,
    until: Annotated[Instant | None, Query(description="Recorded before.")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ViolationPage:
    """The workspace's recorded violations, newest first, filtered and cursor-paged."""
    where = service.ViolationFilter(event=event, kind=kind, since=since, until=until)
    items, next_cursor = await service.list_violations(
        session, workspace_id=caller.workspace_id, where=where, limit=limit, cursor=cursor
    )
    return ViolationPage(
        items=[ViolationRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.get("", response_model=TrackingPlanPage)
async def list_plans(caller: ManagementCaller, session: ReadSession) -> TrackingPlanPage:
    """The workspace's tracking plans."""
    return TrackingPlanPage(
        items=await service.list_plans(session, workspace_id=caller.workspace_id)
    )


@router.post("", response_model=TrackingPlanRead, status_code=status.HTTP_201_CREATED)
async def create_plan(
    body: TrackingPlanCreate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> TrackingPlanRead:
    """A new tracking plan; its schemas are checked before anything is saved."""
    plan = await service.create_plan(
        session,
        workspace_id=caller.workspace_id,
        body=body,
        headers=_headers(request),
        now=clock.now(),
    )
    await session.commit()
    await _announce(request, caller.workspace_id)
    return plan


@router.get("/{plan_id}", response_model=TrackingPlanRead)
async def read_plan(
    plan_id: RowId, caller: ManagementCaller, session: ReadSession
) -> TrackingPlanRead:
    """One tracking plan of the workspace."""
    return await service.get_plan_or_raise(
        session, workspace_id=caller.workspace_id, plan_id=plan_id
    )


@router.put("/{plan_id}", response_model=TrackingPlanRead)
async def update_plan(
    plan_id: RowId,
    body: TrackingPlanUpdate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> TrackingPlanRead:
    """Replace the plan's content; it takes effect in every process (see the README)."""
    plan = await service.update_plan(
        session,
        workspace_id=caller.workspace_id,
        plan_id=plan_id,
        body=body,
        headers=_headers(request),
        now=clock.now(),
    )
    await session.commit()
    await _announce(request, caller.workspace_id)
    return plan


@router.delete("/{plan_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_plan(
    plan_id: RowId, caller: ManagementCaller, session: WriteSession, request: Request
) -> Response:
    """Delete the plan; its sources fall back to the default plan. Violations are kept."""
    await service.delete_plan(session, workspace_id=caller.workspace_id, plan_id=plan_id)
    await session.commit()
    await _announce(request, caller.workspace_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
