"""Fixtures for the durable jobs: a frozen clock, unique job kinds, and helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import NewJob, enqueue


@pytest.fixture
def clock() -> FrozenClock:
    """A clock that only moves when a test moves it."""
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def kind() -> str:
    """A job kind no other test uses, so workers of this test claim only its jobs."""
    return f"test.{uuid.uuid4().hex[:12]}"


async def add_jobs(database: Database, clock: FrozenClock, *jobs: NewJob) -> int:
    """Enqueue and commit; how many were new."""
    async with database.write_session() as session:
        added = await enqueue(session, jobs, now=clock.now())
        await session.commit()
    return added


async def jobs_of(database: Database, kind: str) -> list[Job]:
    """The jobs of a kind still in the table, oldest first."""
    async with database.read_session() as session:
        return list(
            (await session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))).all()
        )
