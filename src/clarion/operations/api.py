"""Routes of the jobs console: see work in flight, retry or discard dead jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession
from clarion.core.jobs import service
from clarion.core.jobs.service import JobState
from clarion.core.routing import StrictJSONRoute
from clarion.operations.schemas import JobPage, JobRead
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], route_class=StrictJSONRoute)


@router.get("", response_model=JobPage)
async def list_jobs(
    caller: ManagementCaller,
    session: ReadSession,
    state: JobState | None = None,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobPage:
    """The workspace's jobs, newest first: `state=dead` lists what needs a hand."""
    jobs, next_cursor = await service.list_jobs(
        session,
        workspace_id=caller.workspace_id,
        state=state,
        kind=kind,
        limit=limit,
        cursor=cursor,
    )
    return JobPage(items=[JobRead.model_validate(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead)
async def read_job(job_id: RowId, caller: ManagementCaller, session: ReadSession) -> JobRead:
    """One job, with its last error."""
    job = await service.get_job_or_raise(session, workspace_id=caller.workspace_id, job_id=job_id)
    return JobRead.model_validate(job)


@router.post("/{job_id}/retry", response_model=JobRead)
async def retry_job(
    job_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> JobRead:
    """Run a dead job again with fresh attempts (or a waiting one now)."""
    job = await service.retry_job(
        session, workspace_id=caller.workspace_id, job_id=job_id, now=clock.now()
    )
    await session.commit()
    return JobRead.model_validate(job)


@router.delete("/{job_id}", status_code=204)
async def discard_job(job_id: RowId, caller: ManagementCaller, session: WriteSession) -> Response:
    """Discard a dead or waiting job for good."""
    await service.discard_job(session, workspace_id=caller.workspace_id, job_id=job_id)
    await session.commit()
    return Response(status_code=204)
