"""Recurring jobs: a cron schedule (UTC) that enqueues a job at each tick, exactly once.

Every worker checks for due schedules as it claims work. Moving a schedule to its next tick
is a compare-and-set on `next_run_at`, in the same transaction that enqueues the tick's job,
so however many workers race, one of them enqueues it and the others see it done. Ticks
missed while no worker ran are run once, not once per missed tick.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from croniter import croniter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import FieldError, InvalidInput
from clarion.core.jobs.models import RecurringJob
from clarion.core.jobs.queue import NewJob, enqueue


def next_tick(cron: str, after: datetime) -> datetime:
    """The first instant of the cron schedule strictly after `after` (UTC)."""
    return croniter(cron, after).get_next(datetime)


def validate_cron(cron: str) -> str:
    """The expression, if it is a valid five-field cron schedule; InvalidInput naming `cron`."""
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidInput(
            f"{cron!r} is not a cron schedule.",
            errors=[FieldError("cron", "expected five fields: minute hour day month weekday")],
        )
    return cron


async def schedule_recurring_job(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    kind: str,
    cron: str,
    payload: dict[str, Any] | None = None,
    priority: int = 0,
    now: datetime,
) -> RecurringJob:
    """Create or replace the workspace's recurring job called `name`; its next tick is
    the schedule's first one after `now`."""
    validate_cron(cron)
    found = await session.scalar(
        select(RecurringJob).where(
            RecurringJob.workspace_id == workspace_id, RecurringJob.name == name
        )
    )
    if found is None:
        found = RecurringJob(workspace_id=workspace_id, name=name, created_at=now)
        session.add(found)
    found.kind = kind
    found.cron = cron
    found.payload = payload or {}
    found.priority = priority
    found.next_run_at = next_tick(cron, now)
    await session.flush()
    return found


async def enqueue_due_recurring_jobs(session: AsyncSession, *, now: datetime) -> int:
    """Enqueue one job for each schedule whose tick has come; how many were enqueued."""
    due = (await session.scalars(select(RecurringJob).where(RecurringJob.next_run_at <= now))).all()
    enqueued = 0
    for schedule in due:
        tick = schedule.next_run_at
        moved = await session.execute(
            update(RecurringJob)
            .where(RecurringJob.id == schedule.id, RecurringJob.next_run_at == tick)
            .values(next_run_at=next_tick(schedule.cron, now))
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another worker took this tick
        enqueued += await enqueue(
            session,
            [
                NewJob(
                    workspace_id=schedule.workspace_id,
                    kind=schedule.kind,
                    payload={**schedule.payload, "scheduled_for": tick.isoformat()},
                    priority=schedule.priority,
                    dedupe_key=f"recurring:{schedule.name}:{tick.isoformat()}",
                )
            ],
            now=now,
        )
    return enqueued
