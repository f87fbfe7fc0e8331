"""Routes: reading profiles, their timelines, merges and trait history; undoing a merge;
erasing a person."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession, get_database
from clarion.core.errors import FieldError, InvalidInput
from clarion.core.routing import StrictJSONRoute
from clarion.ingest.schemas import EventRead
from clarion.profiles import erasure, exports, imports, merges, queries
from clarion.profiles.schemas import (
    MergePage,
    MergeRead,
    ProfileEventPage,
    ProfileImportRead,
    ProfilePage,
    ProfileRead,
    TraitChangePage,
    TraitChangeRead,
)
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"], route_class=StrictJSONRoute)

Identity = Annotated[str | None, Query(min_length=1, max_length=255)]


@router.get("", response_model=ProfilePage)
async def list_profiles(
    caller: ManagementCaller,
    session: ReadSession,
    user_id: Identity = None,
    anonymous_id: Identity = None,
    email: Identity = None,
    phone: Identity = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> ProfilePage:
    """Canonical profiles, oldest first; or the one profile an identity belongs to."""
    given = {
        kind: value
        for kind, value in (
            ("user_id", user_id),
            ("anonymous_id", anonymous_id),
            ("email", email),
            ("phone", phone),
        )
        if value is not None
    }
    if not given:
        profiles, next_cursor = await queries.list_profiles(
            session, workspace_id=caller.workspace_id, limit=limit, cursor=cursor
        )
    else:
        if cursor is not None:
            raise InvalidInput(
                "A lookup by identity has one page.",
                errors=[FieldError("cursor", "not allowed with an identity filter")],
            )
        found = {
            await queries.get_by_identity(
                session, workspace_id=caller.workspace_id, kind=kind, value=value
            )
            for kind, value in given.items()
        }
        profiles = [p for p in found if p is not None] if len(found) == 1 else []
        next_cursor = None
    views = await queries.view_profiles(session, profiles)
    return ProfilePage(items=[ProfileRead.of(v) for v in views], next_cursor=next_cursor)


_IMPORT_DOC = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": (
            "UTF-8 CSV with a header naming user_id, email and/or phone columns and trait"
            " columns (`name:int|float|bool|date|datetime|json` to type them), optionally"
            f" gzip-compressed (`Content-Encoding: gzip`); at most"
            f" {imports.MAX_IMPORT_BYTES // (1024 * 1024)} MB."
        ),
    }
}


@router.post("/imports", response_model=ProfileImportRead, openapi_extra=_IMPORT_DOC)
async def import_profiles(
    request: Request, caller: ManagementCaller, clock: AppClock
) -> ProfileImportRead:
    """Create or update a profile per CSV row (streamed, committed every 500 rows).

    Each bad row is rejected and reported by line; a bad file as a whole changes nothing.
    """
    gzipped = imports.body_encoding(
        content_type=request.headers.get("content-type"),
        content_encoding=request.headers.get("content-encoding"),
        content_length=request.headers.get("content-length"),
    )
    result = await imports.import_csv(
        get_database(request),
        workspace_id=caller.workspace_id,
        body=request.stream(),
        clock=clock,
        gzipped=gzipped,
    )
    return ProfileImportRead.model_validate(result)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {}, "application/jsonl": {}},
            "description": "Every canonical profile of the workspace, as an attachment.",
        }
    },
)
async def export_profiles(
    request: Request,
    caller: ManagementCaller,
    clock: AppClock,
    format: exports.ExportFormat = exports.ExportFormat.CSV,
) -> StreamingResponse:
    """Every canonical profile (identities, traits, computed traits) as CSV or JSON Lines."""
    name = f"profiles-{clock.now():%Y%m%d-%H%M%S}.{format.value}"
    pieces = exports.stream_profiles(
        get_database(request), workspace_id=caller.workspace_id, format=format
    )
    return StreamingResponse(
        (piece.encode() async for piece in pieces),
        media_type=exports.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{profile_id}", response_model=ProfileRead)
async def read_profile(
    profile_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> ProfileRead:
    """The profile; a merged-away id answers the profile it was merged into."""
    profile = await queries.get_profile_or_raise(
        session, workspace_id=caller.workspace_id, profile_id=profile_id
    )
    [view] = await queries.view_profiles(session, [profile])
    return ProfileRead.of(view)


@router.delete("/{profile_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_profile(
    profile_id: uuid.UUID,
    request: Request,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    suppress: Annotated[
        bool,
        Query(
            description="Also put the person's email addresses and phone numbers on the"
            " suppression list (reason erased), so that a profile made"
            " later with the same address is never messaged."
        ),
    ] = False,
) -> Response:
    """Erase the person (GDPR / CCPA): the profile (a merged-away id: the profile it was
    merged into), every profile merged into it, their identities, events, trait history,
    segment memberships, messages, consents and journey runs, in one transaction.
    Suppressed addresses stay; with `suppress=true` the person's own are added first.
    Events not yet processed are not covered: stop sending about the person first."""
    state = request.app.state
    await erasure.delete_profile(
        session,
        workspace_id=caller.workspace_id,
        profile_id=profile_id,
        erasers=state.profile_erasers,
        keep_out=erasure.KeepOut(state.address_suppressor, clock.now()) if suppress else None,
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{profile_id}/events", response_model=ProfileEventPage)
async def list_profile_events(
    profile_id: uuid.UUID,
    caller: ManagementCaller,
    session: ReadSession,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ProfileEventPage:
    """The profile's timeline (its whole merge tree), newest first."""
    events, next_cursor = await queries.list_timeline(
        session, workspace_id=caller.workspace_id, profile_id=profile_id, limit=limit, cursor=cursor
    )
    return ProfileEventPage(
        items=[EventRead.model_validate(e) for e in events], next_cursor=next_cursor
    )


@router.get("/{profile_id}/merges", response_model=MergePage)
async def list_profile_merges(
    profile_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> MergePage:
    """Every merge, un-merge and refused merge of the profile, newest first."""
    records = await queries.list_merges(
        session, workspace_id=caller.workspace_id, profile_id=profile_id
    )
    return MergePage(items=[MergeRead.model_validate(r) for r in records])


@router.post("/{profile_id}/merges/{merge_id}/undo", response_model=MergeRead)
async def undo_merge(
    profile_id: uuid.UUID,
    merge_id: RowId,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> MergeRead:
    """Un-merge: the absorbed profile gets back its identities, events and traits."""
    record = await merges.unmerge(
        session,
        workspace_id=caller.workspace_id,
        profile_id=profile_id,
        merge_id=merge_id,
        now=clock.now(),
    )
    await session.commit()
    return MergeRead.model_validate(record)


@router.get("/{profile_id}/traits/history", response_model=TraitChangePage)
async def list_trait_history(
    profile_id: uuid.UUID,
    caller: ManagementCaller,
    session: ReadSession,
    key: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TraitChangePage:
    """Every change of the profile's traits, most recent first."""
    changes, next_cursor = await queries.list_trait_history(
        session,
        workspace_id=caller.workspace_id,
        profile_id=profile_id,
        key=key,
        limit=limit,
        cursor=cursor,
    )
    return TraitChangePage(
        items=[TraitChangeRead.model_validate(c) for c in changes], next_cursor=next_cursor
    )
