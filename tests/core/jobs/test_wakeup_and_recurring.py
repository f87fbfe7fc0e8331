"""Workers wake the moment jobs commit (in process, and by NOTIFY across processes on
PostgreSQL), and recurring jobs enqueue exactly once per tick."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.errors import InvalidInput
from clarion.core.jobs.queue import NewJob
from clarion.core.jobs.recurring import next_tick, schedule_recurring_job, validate_cron
from clarion.core.jobs.wakeup import CHANNEL, Wakeup
from clarion.core.jobs.worker import JobContext, Registry, Worker
from tests.conftest import Tenant
from tests.core.jobs.conftest import add_jobs, jobs_of

# Far longer than any test waits: a job that runs at once was woken, not polled.
SLOW_POLL = 60.0


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # let it make its first (empty) claim and start listening
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def signalling(kind: str, done: asyncio.Event) -> Registry:
    registry = Registry()

    async def handler(context: JobContext) -> None:
        done.set()

    registry.add(kind, handler)
    return registry


async def test_a_committed_job_wakes_an_idle_worker(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    done = asyncio.Event()
    worker = Worker(database, signalling(kind, done), clock=clock, poll_interval=SLOW_POLL)
    async with running(worker):
        await add_jobs(database, clock, NewJob(tenant.id, kind))
        await asyncio.wait_for(done.wait(), timeout=10)


async def test_postgres_notify_wakes_a_worker_of_another_process(
    backend: str, database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite wakes workers in process")
    done = asyncio.Event()
    worker = Worker(database, signalling(kind, done), clock=clock, poll_interval=SLOW_POLL)
    async with running(worker):
        # Another process enqueues: a plain connection, no in-process signal.
        dsn = database.url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO jobs (workspace_id, kind, payload, state, priority, run_at,"
                    " attempts, max_attempts, created_at, updated_at)"
                    " VALUES ($1, $2, '{}', 'ready', 0, $3, 0, 3, $3, $3)",
                    tenant.id,
                    kind,
                    clock.now(),
                )
                await connection.execute("SELECT pg_notify('clarion_jobs', '')")
        finally:
            await connection.close()
        await asyncio.wait_for(done.wait(), timeout=10)


async def test_only_jobs_due_now_wake_workers(
    backend: str, database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    """A job due later would wake every worker for nothing (their poll finds it when it is
    due): neither the in-process signal nor PostgreSQL's NOTIFY is sent for it."""
    wakeup = Wakeup()
    notified = asyncio.Event()
    listener = None
    if backend == "postgresql":
        dsn = database.url.replace("postgresql+asyncpg://", "postgresql://")
        listener = await asyncpg.connect(dsn)
        await listener.add_listener(CHANNEL, lambda *_: notified.set())
    try:
        later = clock.now() + timedelta(minutes=5)
        await add_jobs(database, clock, NewJob(tenant.id, kind, run_at=later, dedupe_key="a"))
        await add_jobs(database, clock, NewJob(tenant.id, kind, run_at=later))
        assert not await wakeup.wait(0.3)
        if listener is not None:
            assert not notified.is_set()
        await add_jobs(
            database,
            clock,
            NewJob(tenant.id, kind, run_at=later, dedupe_key="b"),
            NewJob(tenant.id, kind, dedupe_key="c"),
        )
        assert await wakeup.wait(5)
        if listener is not None:
            await asyncio.wait_for(notified.wait(), timeout=5)
            notified.clear()
        await add_jobs(database, clock, NewJob(tenant.id, kind))  # due, with no dedupe key
        assert await wakeup.wait(5)
        if listener is not None:
            await asyncio.wait_for(notified.wait(), timeout=5)
    finally:
        if listener is not None:
            await listener.close()
    assert len(await jobs_of(database, kind)) == 5


async def test_recurring_job_runs_once_per_tick_however_many_workers(
    database: Database, tenant: Tenant, kind: str
) -> None:
    clock = FrozenClock(datetime(2026, 11, 22, 10, 2, tzinfo=UTC))
    async with database.write_session() as session:
        schedule = await schedule_recurring_job(
            session,
            workspace_id=tenant.id,
            name=f"nightly-{kind}",
            kind=kind,
            cron="*/5 * * * *",
            payload={"segment": 7},
            now=clock.now(),
        )
        await session.commit()
    assert schedule.next_run_at == datetime(2026, 11, 22, 10, 5, tzinfo=UTC)

    ran: list[JobContext] = []
    registry = Registry()

    async def handler(context: JobContext) -> None:
        ran.append(context)

    registry.add(kind, handler)
    workers = [Worker(database, registry, clock=clock) for _ in range(3)]
    await asyncio.gather(*(w.drain() for w in workers))
    assert ran == []  # not yet 10:05

    clock.advance(timedelta(minutes=3))  # 10:05
    await asyncio.gather(*(w.drain() for w in workers))
    await asyncio.gather(*(w.drain() for w in workers))
    assert [c.job.payload for c in ran] == [
        {"segment": 7, "scheduled_for": "2026-11-22T10:05:00+00:00"}
    ]

    clock.advance(timedelta(hours=2))  # many ticks missed while nothing ran: run once
    await asyncio.gather(*(w.drain() for w in workers))
    assert len(ran) == 2
    assert await jobs_of(database, kind) == []


def test_cron_expressions_are_checked() -> None:
    assert next_tick("0 9 * * 1", datetime(2026, 11, 22, tzinfo=UTC)) == datetime(
        2026, 11, 23, 9, tzinfo=UTC
    )
    for bad in ("every day", "* * * *", "61 * * * *", "* * * * * *"):
        with pytest.raises(InvalidInput) as caught:
            validate_cron(bad)
        assert caught.value.errors[0].field == "cron"


async def test_a_stopped_worker_hands_its_running_jobs_back(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    started = asyncio.Event()
    registry = Registry()

    async def long_job(context: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()  # runs until the worker stops

    registry.add(kind, long_job)
    await add_jobs(database, clock, NewJob(tenant.id, kind))
    async with running(Worker(database, registry, clock=clock, poll_interval=SLOW_POLL)):
        await asyncio.wait_for(started.wait(), timeout=10)
    [job] = await jobs_of(database, kind)
    assert (job.state, job.attempts, job.lease_owner) == ("ready", 0, None)
