"""Durable jobs: the outbox, due times, priorities, dedupe, retries, dead jobs, serial keys,
leases and many workers, on both databases. Time moves through a frozen clock."""

from __future__ import annotations

import asyncio
import random
import traceback
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import (
    JobContext,
    LeaseLost,
    PermanentFailure,
    Registry,
    Worker,
    backoff,
)
from tests.conftest import Tenant
from tests.core.jobs.conftest import add_jobs, jobs_of


def recording(kind: str, ran: list[JobContext]) -> Registry:
    registry = Registry()

    async def handler(context: JobContext) -> None:
        ran.append(context)

    registry.add(kind, handler)
    return registry


async def test_a_job_exists_only_if_its_transaction_commits(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    async with database.write_session() as session:
        await enqueue(session, [NewJob(tenant.id, kind, {"n": 1})], now=clock.now())
        await session.rollback()
    assert await jobs_of(database, kind) == []

    await add_jobs(database, clock, NewJob(tenant.id, kind, {"n": 2}))
    ran: list[JobContext] = []
    worker = Worker(database, recording(kind, ran), clock=clock)
    assert await worker.drain() == 1
    assert [c.job.payload for c in ran] == [{"n": 2}]
    assert ran[0].job.attempts == 1
    assert await jobs_of(database, kind) == []  # a job that succeeded is gone


async def test_due_time_and_priority(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    await add_jobs(
        database,
        clock,
        NewJob(tenant.id, kind, {"n": "later"}, run_at=clock.now() + timedelta(minutes=5)),
        NewJob(tenant.id, kind, {"n": "low"}, priority=5),
        NewJob(tenant.id, kind, {"n": "high"}, priority=-1),
    )
    ran: list[JobContext] = []
    worker = Worker(database, recording(kind, ran), clock=clock, concurrency=1)
    assert await worker.drain() == 2
    assert [c.job.payload["n"] for c in ran] == ["high", "low"]
    clock.advance(timedelta(minutes=5))
    assert await worker.drain() == 1
    assert ran[-1].job.payload["n"] == "later"


async def test_a_job_kept_waiting_by_more_urgent_work_moves_up_once_it_waited_too_long(
    database: Database, tenant: Tenant, kind: str
) -> None:
    # Long ago, so that no other test's job has waited longer (workers look at the
    # longest-waiting ones only).
    clock = FrozenClock(datetime(2001, 1, 1, tzinfo=UTC))
    urgent, patient = f"{kind}.urgent", f"{kind}.patient"
    ran: list[str] = []

    async def more_urgent_work(context: JobContext) -> None:
        ran.append(urgent)
        async with database.write_session() as session:  # an endless stream: two for one
            await enqueue(session, [NewJob(tenant.id, urgent, {})] * 2, now=clock.now())
            await session.commit()

    async def waits(context: JobContext) -> None:
        ran.append(patient)

    registry = Registry()
    registry.add(urgent, more_urgent_work)
    registry.add(patient, waits)
    await add_jobs(
        database, clock, NewJob(tenant.id, patient, {}, priority=10), NewJob(tenant.id, urgent, {})
    )
    worker = Worker(database, registry, clock=clock, concurrency=1)
    for _ in range(6):  # 0 to 25 s: the urgent stream goes first
        assert await worker.drain(rounds=1) == 1
        clock.advance(timedelta(seconds=5))
    assert ran == [urgent] * 6
    assert await worker.drain(rounds=1) == 1  # 30 s: it has waited long enough
    assert ran[-1] == patient
    assert await worker.drain(rounds=1) == 1
    assert ran[-1] == urgent and ran.count(patient) == 1


async def test_dedupe_key_holds_while_a_job_is_live(
    database: Database, clock: FrozenClock, tenant: Tenant, other_tenant: Tenant, kind: str
) -> None:
    same = NewJob(tenant.id, kind, {"n": 1}, dedupe_key="recompute:42")
    assert await add_jobs(database, clock, same) == 1
    assert await add_jobs(database, clock, same) == 0
    # Another workspace's key is its own.
    assert (
        await add_jobs(database, clock, NewJob(other_tenant.id, kind, dedupe_key="recompute:42"))
        == 1
    )
    ran: list[JobContext] = []
    assert await Worker(database, recording(kind, ran), clock=clock).drain() == 2
    assert await add_jobs(database, clock, same) == 1  # done, so it may be enqueued again


async def test_failures_retry_with_backoff_then_die(
    database: Database,
    clock: FrozenClock,
    tenant: Tenant,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    calls: list[int] = []

    async def flaky(context: JobContext) -> None:
        calls.append(context.job.attempts)
        raise RuntimeError(f"provider down (attempt {context.job.attempts})")

    registry.add(kind, flaky)
    await add_jobs(database, clock, NewJob(tenant.id, kind, max_attempts=3))
    worker = Worker(database, registry, clock=clock, rng=random.Random(7))
    assert await worker.drain() == 1
    [job] = await jobs_of(database, kind)
    assert (job.state, job.attempts) == ("ready", 1)
    assert "provider down (attempt 1)" in (job.last_error or "")
    wait = job.run_at - clock.now()
    assert timedelta(seconds=1) <= wait <= timedelta(seconds=2)

    assert await worker.drain() == 0  # not due yet
    clock.advance(wait)
    assert await worker.drain() == 1
    [job] = await jobs_of(database, kind)
    assert timedelta(seconds=2) <= job.run_at - clock.now() <= timedelta(seconds=4)
    clock.advance(timedelta(seconds=4))
    assert await worker.drain() == 1
    [job] = await jobs_of(database, kind)
    assert (job.state, job.attempts) == ("dead", 3)
    assert calls == [1, 2, 3]
    clock.advance(timedelta(days=1))
    assert await worker.drain() == 0  # the dead stay dead until retried by hand
    # The traceback on the first attempt and the last, where the error was raised.
    failures = [r for r in caplog.records if "failed on attempt" in r.getMessage()]
    assert [r.levelname for r in failures] == ["WARNING", "WARNING", "ERROR"]
    assert [r.exc_info is not None for r in failures] == [True, False, True]
    for record in failures:
        if record.exc_info is not None:
            assert "in flaky" in "".join(traceback.format_exception(*record.exc_info))


async def test_a_permanent_failure_dies_at_once(
    database: Database,
    clock: FrozenClock,
    tenant: Tenant,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()

    async def hopeless(context: JobContext) -> None:
        raise PermanentFailure("template 9 was deleted")

    registry.add(kind, hopeless)
    await add_jobs(database, clock, NewJob(tenant.id, kind))
    await Worker(database, registry, clock=clock).drain()
    [job] = await jobs_of(database, kind)
    assert (job.state, job.attempts) == ("dead", 1)
    assert "template 9 was deleted" in (job.last_error or "")
    [failure] = [r for r in caplog.records if "failed on attempt" in r.getMessage()]
    assert failure.levelname == "ERROR" and failure.exc_info is None  # its message says all


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempts, ceiling in ((1, 2), (2, 4), (5, 32), (30, 3600)):
        delays = [backoff(attempts, rng).total_seconds() for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


async def test_jobs_of_one_serial_key_run_one_at_a_time_in_order(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    registry = Registry()
    ran: list[str] = []
    fail_once = {"a1"}

    async def handler(context: JobContext) -> None:
        name = context.job.payload["n"]
        if name in fail_once:
            fail_once.discard(name)
            raise RuntimeError("transient")
        ran.append(name)

    registry.add(kind, handler)
    await add_jobs(
        database,
        clock,
        NewJob(tenant.id, kind, {"n": "a1"}, serial_key="profile:a"),
        NewJob(tenant.id, kind, {"n": "a2"}, serial_key="profile:a"),
        NewJob(tenant.id, kind, {"n": "b1"}, serial_key="profile:b"),
        NewJob(tenant.id, kind, {"n": "free"}),
    )
    worker = Worker(database, registry, clock=clock, concurrency=10)
    await worker.drain()
    # a1 failed and waits for its retry: a2 must not overtake it.
    assert sorted(ran) == ["b1", "free"]
    clock.advance(timedelta(minutes=1))
    await worker.drain()
    assert ran[2:] == ["a1", "a2"]


async def test_an_expired_lease_is_taken_over_and_the_old_worker_cannot_commit(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    ran: list[JobContext] = []
    registry = recording(kind, ran)
    await add_jobs(database, clock, NewJob(tenant.id, kind))
    crashed = Worker(database, registry, clock=clock, lease=timedelta(seconds=30))
    [claimed] = await crashed._maintain_and_claim()  # claims, then "dies" before running it

    survivor = Worker(database, registry, clock=clock)
    assert await survivor.drain() == 0  # the lease still holds
    clock.advance(timedelta(seconds=31))
    assert await survivor.drain() == 1
    assert ran[0].job.attempts == 2  # the lost run counted as an attempt
    assert await jobs_of(database, kind) == []

    # The first worker wakes up and tries to finish: its transaction must not commit.
    context = JobContext(claimed, database, clock, crashed.owner)
    async with database.write_session() as session:
        with pytest.raises(LeaseLost):
            await context.complete(session)


async def test_a_job_that_keeps_losing_its_worker_dies(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    ran: list[JobContext] = []
    await add_jobs(database, clock, NewJob(tenant.id, kind, max_attempts=2))
    for _ in range(2):
        crashing = Worker(database, recording(kind, ran), clock=clock, lease=timedelta(seconds=5))
        assert len(await crashing._maintain_and_claim()) == 1
        clock.advance(timedelta(seconds=6))
    await Worker(database, recording(kind, ran), clock=clock).drain()
    [job] = await jobs_of(database, kind)
    assert job.state == "dead"
    assert "lease expired" in (job.last_error or "")
    assert ran == []


async def test_many_workers_run_each_job_exactly_once(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    registry = Registry()
    running: set[int] = set()
    ran: list[int] = []

    async def handler(context: JobContext) -> None:
        assert context.job.id not in running, "a job ran twice at once"
        running.add(context.job.id)
        await asyncio.sleep(0)  # let other workers interleave
        async with context.database.write_session() as session:
            await session.execute(text("SELECT 1"))
            await context.complete(session)  # effects and completion commit together
            await session.commit()
        running.discard(context.job.id)
        ran.append(context.job.id)

    registry.add(kind, handler)
    await add_jobs(database, clock, *(NewJob(tenant.id, kind, {"n": n}) for n in range(120)))
    workers = [Worker(database, registry, clock=clock, concurrency=5) for _ in range(4)]
    counts = await asyncio.gather(*(w.drain() for w in workers))
    assert sorted(ran) == sorted({*ran}) and len(ran) == 120
    assert sum(counts) == 120
    assert await jobs_of(database, kind) == []


async def test_a_finished_jobs_id_is_never_given_to_another(
    database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    ran: list[JobContext] = []
    worker = Worker(database, recording(kind, ran), clock=clock)
    await add_jobs(database, clock, NewJob(tenant.id, kind))
    await worker.drain()
    await add_jobs(database, clock, NewJob(tenant.id, kind))
    await worker.drain()
    assert ran[1].job.id > ran[0].job.id  # SQLite would reuse the top rowid without AUTOINCREMENT


def test_a_registry_selects_the_kinds_a_dedicated_worker_runs() -> None:
    registry = Registry()

    async def handler(context: JobContext) -> None:
        return None

    for name in ("events.process", "messages.deliver", "segments.recompute"):
        registry.add(name, handler)
    assert set(registry.select(["messages.deliver"]).kinds) == {"messages.deliver"}
    assert set(registry.select(skip=["messages.deliver"]).kinds) == {
        "events.process",
        "segments.recompute",
    }
    assert set(registry.select().kinds) == set(registry.kinds)
    with pytest.raises(ValueError, match="unknown job kinds: nope"):
        registry.select(["nope"])
    with pytest.raises(ValueError, match="no job kind is left"):
        registry.select(["events.process"], ["events.process"])
