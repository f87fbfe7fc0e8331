"""Managing a workspace's jobs by hand: list, inspect, retry and discard."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, NotFound
from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import wake_on_commit
from clarion.core.pagination import id_page


class JobState(StrEnum):
    """Where a job stands: waiting for its time, leased by a worker, or given up on."""

    READY = "ready"
    RUNNING = "running"
    DEAD = "dead"


async def list_jobs(
    session: AsyncSession,
    *,
    workspace_id: int,
    state: JobState | None = None,
    kind: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[Sequence[Job], str | None]:
    """A page of the workspace's jobs, newest first, and the cursor of the next page."""
    query: Select[Job] = select(Job).where(Job.workspace_id == workspace_id)
    if state is not None:
        query = query.where(Job.state == state.value)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return await id_page(session, query, Job.id, limit=limit, cursor=cursor, newest_first=True)


async def get_job_or_raise(session: AsyncSession, *, workspace_id: int, job_id: int) -> Job:
    """The workspace's job; NotFound otherwise (a finished job is gone)."""
    job = await session.scalar(
        select(Job).where(Job.id == job_id, Job.workspace_id == workspace_id)
    )
    if job is None:
        raise NotFound(f"Job {job_id} does not exist (a job that succeeded is removed).")
    return job


async def retry_job(session: AsyncSession, *, workspace_id: int, job_id: int, now: datetime) -> Job:
    """Run a dead job again with fresh attempts, or a waiting one now; Conflict if running."""
    job = await get_job_or_raise(session, workspace_id=workspace_id, job_id=job_id)
    if job.state == JobState.RUNNING:
        raise Conflict(f"Job {job_id} is running; it cannot be retried until it stops.")
    if job.state == JobState.DEAD and job.dedupe_key is not None:
        twin = await session.scalar(
            select(Job.id).where(
                Job.workspace_id == workspace_id,
                Job.kind == job.kind,
                Job.dedupe_key == job.dedupe_key,
                Job.state.in_([JobState.READY, JobState.RUNNING]),
            )
        )
        if twin is not None:
            raise Conflict(f"Job {twin} already does the same work (dedupe key {job.dedupe_key}).")
    if job.state == JobState.DEAD:
        job.attempts = 0
    job.state = JobState.READY
    job.run_at = now
    job.updated_at = now
    await session.flush()
    await wake_on_commit(session)
    return job


async def discard_job(session: AsyncSession, *, workspace_id: int, job_id: int) -> None:
    """Delete a dead or waiting job for good; Conflict if a worker is running it."""
    job = await get_job_or_raise(session, workspace_id=workspace_id, job_id=job_id)
    if job.state == JobState.RUNNING:
        raise Conflict(f"Job {job_id} is running; it cannot be discarded until it stops.")
    await session.execute(delete(Job).where(Job.id == job.id))
