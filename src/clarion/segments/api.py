"""Routes: segments (`/api/v1/segments`): define, validate, preview, recompute, explain; their
members (paged and as CSV), history and sizes; the segments a profile is in."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession, get_database
from clarion.core.errors import FieldError
from clarion.core.routing import StrictJSONRoute
from clarion.segments import explain as explaining
from clarion.segments import recompute, service
from clarion.segments.catalog import Catalog
from clarion.segments.models import Segment
from clarion.segments.schemas import (
    ChangePage,
    ChangeRead,
    MemberPage,
    MemberRead,
    MembershipRead,
    Preview,
    RecomputeRead,
    RuleCheck,
    RuleChecked,
    SegmentCreate,
    SegmentPage,
    SegmentRead,
    SegmentSaved,
    SegmentUpdate,
    SizeRead,
    TemplateRead,
    Warning_,
)
from clarion.segments.templates import TEMPLATES
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1", tags=["segments"], route_class=StrictJSONRoute)
Cursor = Annotated[str | None, Query(max_length=512)]


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.segment_catalog
    return catalog


def _warnings(errors: list[FieldError]) -> list[Warning_]:
    return [Warning_(field=error.field, message=error.message) for error in errors]


def _saved(segment: Segment, warnings: list[FieldError]) -> SegmentSaved:
    return SegmentSaved.model_validate(
        {**SegmentRead.model_validate(segment).model_dump(), "warnings": _warnings(warnings)}
    )


@router.get("/segments", response_model=SegmentPage)
async def list_segments(
    caller: ManagementCaller,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SegmentPage:
    """The workspace's segments, oldest first."""
    items, next_cursor = await service.list_segments(
        session, workspace_id=caller.workspace_id, limit=limit, cursor=cursor
    )
    return SegmentPage(
        items=[SegmentRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.post("/segments", response_model=SegmentSaved, status_code=status.HTTP_201_CREATED)
async def create_segment(
    body: SegmentCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> SegmentSaved:
    """A new segment; its members are computed by a job right after (its baseline)."""
    segment, warnings = await service.create_segment(
        session,
        workspace_id=caller.workspace_id,
        name=body.name,
        description=body.description,
        raw_rule=body.rule,
        now=clock.now(),
    )
    await recompute.schedule(session, segment=segment, now=clock.now())
    await session.commit()
    return _saved(segment, warnings)


@router.post("/segments/validate", response_model=RuleChecked)
async def validate_rule(
    body: RuleCheck, caller: ManagementCaller, session: ReadSession
) -> RuleChecked:
    """The rule in its canonical form with its warnings; 400 naming each node at fault."""
    checked = await service.check_rule(session, workspace_id=caller.workspace_id, raw=body.rule)
    return RuleChecked(rule=checked.document, warnings=_warnings(checked.warnings))


@router.post("/segments/preview", response_model=Preview)
async def preview_rule(
    body: RuleCheck,
    caller: ManagementCaller,
    session: ReadSession,
    clock: AppClock,
    request: Request,
    sample: Annotated[int, Query(ge=0, le=100)] = 20,
) -> Preview:
    """How many profiles the rule selects now, and some of them, without saving it."""
    checked = await service.check_rule(session, workspace_id=caller.workspace_id, raw=body.rule)
    index = await _catalog(request).load(session, caller.workspace_id)
    count, ids = await recompute.preview(
        session,
        workspace_id=caller.workspace_id,
        index=index,
        rule=checked.rule,
        now=clock.now(),
        sample=sample,
    )
    return Preview(count=count, sample=ids, warnings=_warnings(checked.warnings))


@router.get("/segments/templates", response_model=list[TemplateRead])
async def list_templates(caller: ManagementCaller) -> list[TemplateRead]:
    """The ready-made segments."""
    return [TemplateRead.model_validate(template) for template in TEMPLATES.values()]


@router.post(
    "/segments/templates/{key}", response_model=SegmentSaved, status_code=status.HTTP_201_CREATED
)
async def create_from_template(
    key: str, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> SegmentSaved:
    """The ready-made segment `key`, created in the workspace (once)."""
    segment, warnings = await service.create_from_template(
        session, workspace_id=caller.workspace_id, key=key, now=clock.now()
    )
    await recompute.schedule(session, segment=segment, now=clock.now())
    await session.commit()
    return _saved(segment, warnings)


@router.get("/segments/{segment_id}", response_model=SegmentRead)
async def read_segment(
    segment_id: RowId, caller: ManagementCaller, session: ReadSession
) -> Segment:
    """One segment."""
    return await service.get_segment_or_raise(
        session, workspace_id=caller.workspace_id, segment_id=segment_id
    )


@router.patch("/segments/{segment_id}", response_model=SegmentSaved)
async def update_segment(
    segment_id: RowId,
    body: SegmentUpdate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> SegmentSaved:
    """Change the name, description or rule; a new rule is recomputed by a job right after."""
    segment, warnings, rebaselined = await service.update_segment(
        session,
        workspace_id=caller.workspace_id,
        segment_id=segment_id,
        name=body.name,
        description=body.description,
        raw_rule=body.rule,
        now=clock.now(),
    )
    for changed in rebaselined:
        await recompute.schedule(session, segment=changed, now=clock.now())
    await session.commit()
    return _saved(segment, warnings)


@router.delete("/segments/{segment_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_segment(
    segment_id: RowId, caller: ManagementCaller, session: WriteSession, request: Request
) -> Response:
    """Delete the segment, its members and history; 409 while another segment names it, a
    live or paused journey uses it, or a campaign has yet to take its audience from it."""
    await service.delete_segment(
        session,
        workspace_id=caller.workspace_id,
        segment_id=segment_id,
        users=request.app.state.segment_users,
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/segments/{segment_id}/recompute", response_model=RecomputeRead)
async def recompute_segment(
    segment_id: RowId,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> RecomputeRead:
    """Recompute the segment over the whole workspace now; what entered and exited."""
    segment = await service.get_segment_or_raise(
        session, workspace_id=caller.workspace_id, segment_id=segment_id
    )
    result = await recompute.recompute_one(
        session,
        workspace_id=caller.workspace_id,
        segment=segment,
        catalog=_catalog(request),
        now=clock.now(),
    )
    await session.commit()
    return RecomputeRead(
        segment_id=result.segment_id,
        size=result.size,
        entered=result.entered,
        exited=result.exited,
        at=result.at,
    )


@router.get("/segments/{segment_id}/explain")
async def explain_membership(
    segment_id: RowId,
    profile_id: uuid.UUID,
    caller: ManagementCaller,
    session: ReadSession,
    clock: AppClock,
    request: Request,
) -> dict[str, Any]:
    """Condition by condition, which parts of the rule hold for the profile, with values."""
    segment = await service.get_segment_or_raise(
        session, workspace_id=caller.workspace_id, segment_id=segment_id
    )
    index = await _catalog(request).load(session, caller.workspace_id)
    return await explaining.explain(
        session,
        workspace_id=caller.workspace_id,
        index=index,
        segment=segment,
        profile_id=profile_id,
        now=clock.now(),
    )


@router.get("/segments/{segment_id}/members", response_model=MemberPage)
async def list_members(
    segment_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemberPage:
    """The segment's members, by profile id."""
    items, next_cursor = await service.list_members(
        session,
        workspace_id=caller.workspace_id,
        segment_id=segment_id,
        limit=limit,
        cursor=cursor,
    )
    return MemberPage(
        items=[MemberRead(profile_id=m.profile_id, entered_at=m.entered_at) for m in items],
        next_cursor=next_cursor,
    )


@router.get(
    "/segments/{segment_id}/members.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "Every member."}},
)
async def export_members(
    segment_id: RowId, caller: ManagementCaller, session: ReadSession, request: Request
) -> StreamingResponse:
    """Every member as CSV: profile_id, user_id, anonymous_id, entered_at."""
    segment = await service.get_segment_or_raise(
        session, workspace_id=caller.workspace_id, segment_id=segment_id
    )
    rows = service.stream_members(
        get_database(request), workspace_id=caller.workspace_id, segment_id=segment.id
    )
    return StreamingResponse(
        (row.encode() async for row in rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="segment-{segment.id}.csv"'},
    )


@router.get("/segments/{segment_id}/changes", response_model=ChangePage)
async def list_changes(
    segment_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChangePage:
    """Who entered and exited the segment, newest first."""
    await service.get_segment_or_raise(
        session, workspace_id=caller.workspace_id, segment_id=segment_id
    )
    items, next_cursor = await service.list_changes(
        session,
        workspace_id=caller.workspace_id,
        segment_id=segment_id,
        limit=limit,
        cursor=cursor,
    )
    return ChangePage(
        items=[ChangeRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.get("/segments/{segment_id}/sizes", response_model=list[SizeRead])
async def list_sizes(
    segment_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[SizeRead]:
    """The segment's size after each recompute, newest first."""
    rows = await service.list_sizes(
        session, workspace_id=caller.workspace_id, segment_id=segment_id, limit=limit
    )
    return [SizeRead.model_validate(row) for row in rows]


@router.get("/profiles/{profile_id}/segments", response_model=list[MembershipRead])
async def profile_segments(
    profile_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> list[MembershipRead]:
    """The segments the profile (or the profile it was merged into) is in now."""
    rows = await service.profile_memberships(
        session, workspace_id=caller.workspace_id, profile_id=profile_id
    )
    return [MembershipRead(segment_id=i, name=name, entered_at=at) for i, name, at in rows]
