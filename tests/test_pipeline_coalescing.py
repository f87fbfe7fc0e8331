"""One processing run takes over the ready jobs queued behind it under its serial key:
each sender's events stay in order and are applied exactly once, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, select, text

from clarion import pipeline as pipeline_module
from clarion.core.clock import FrozenClock
from clarion.core.database import Database, UTCDateTime
from clarion.core.jobs.models import Job
from clarion.core.jobs.worker import JobContext, Registry, Worker
from clarion.ingest.jobs import PROCESS_EVENTS, StoredEvent, shard_of
from clarion.ingest.plans.review import Review
from clarion.ingest.records import EventRecord
from clarion.pipeline import Pipeline
from clarion.profiles.models import ProfileEvent, TraitChange
from tests.conftest import Tenant

MOMENT = "2026-10-01T12:00:00Z"  # one timestamp for every identify: the later arrival wins


def identify(n: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": "ada",
        "anonymousId": "device-1",
        "traits": {"plan": f"v{n}"},
        "timestamp": MOMENT,
        "messageId": f"i{n}",
    }


def viewed(n: int) -> dict[str, Any]:
    return {"type": "track", "event": "Viewed", "anonymousId": "device-1", "messageId": f"t{n}"}


async def send_separately(
    client: httpx.AsyncClient, tenant: Tenant, count: int, *, first: int = 1
) -> None:
    """`count` requests from one sender, each committed (and queued as a job) on its own."""
    for n in range(first, first + count):
        sent = await client.post(
            "/v1/batch", json={"batch": [identify(n), viewed(n)]}, auth=tenant.writer
        )
        assert sent.json()["accepted"] == 2


async def jobs_of(database: Database, tenant: Tenant) -> list[Job]:
    async with database.read_session() as session:
        query = select(Job).where(Job.workspace_id == tenant.id, Job.kind == PROCESS_EVENTS)
        return list((await session.scalars(query.order_by(Job.id))).all())


def counting_worker(
    app: FastAPI, tenant: Tenant, runs: list[list[int]], *, concurrency: int = 4
) -> Worker:
    """A pipeline worker that notes, for each run of this tenant's jobs, its event ids."""
    pipeline: Pipeline = app.state.pipeline

    async def handler(context: JobContext) -> None:
        if context.job.workspace_id == tenant.id:
            runs.append(context.job.payload["event_ids"])
        await pipeline.process_events(context)

    registry = Registry()
    registry.add(PROCESS_EVENTS, handler)
    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=5))
    return Worker(app.state.database, registry, clock=clock, concurrency=concurrency)


async def applied(database: Database, tenant: Tenant) -> tuple[list[int], list[Any]]:
    """Events on the tenant's timelines (each once?) and its `plan` values in history order."""
    async with database.read_session() as session:
        events = await session.scalars(
            select(ProfileEvent.event_id).where(ProfileEvent.workspace_id == tenant.id)
        )
        changes = await session.scalars(
            select(TraitChange)
            .where(TraitChange.workspace_id == tenant.id, TraitChange.key == "plan")
            .order_by(TraitChange.id)
        )
        return sorted(events), [change.new for change in changes]


async def test_one_run_applies_a_senders_queued_jobs_in_order(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await send_separately(client, tenant, 4)
    jobs = await jobs_of(database, tenant)
    assert len(jobs) == 4 and len({job.serial_key for job in jobs}) == 1
    runs: list[list[int]] = []
    await counting_worker(app, tenant, runs).drain()

    assert len(runs) == 1  # the first job took over the three behind it
    events, history = await applied(database, tenant)
    assert events == sorted(i for job in jobs for i in job.payload["event_ids"])
    assert history == ["v1", "v2", "v3", "v4"]  # in the order they were stored
    assert await jobs_of(database, tenant) == []


async def test_jobs_wait_behind_one_running_elsewhere(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await send_separately(client, tenant, 1)
    runs: list[list[int]] = []
    elsewhere = counting_worker(app, tenant, runs)
    claimed = await elsewhere._maintain_and_claim()
    [first] = [job for job in claimed if job.workspace_id == tenant.id]
    await send_separately(client, tenant, 3, first=2)  # queued behind the running job

    await counting_worker(app, tenant, runs).drain()
    assert runs == []  # nobody may run them, nor take them over, while it runs
    assert (await applied(database, tenant))[0] == []

    await elsewhere._execute(first)  # it finishes, taking over the ones behind it
    events, history = await applied(database, tenant)
    assert len(runs) == 1 and len(events) == 8 == len(set(events))
    # identify 1 is applied first; the queued v2..v4 follow it, in order.
    assert history == ["v1", "v2", "v3", "v4"]
    assert await jobs_of(database, tenant) == []


async def test_a_retried_job_takes_over_nothing(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await send_separately(client, tenant, 3)
    first, *_ = await jobs_of(database, tenant)
    async with database.write_session() as session:  # as if its first attempt had failed
        await session.execute(text("UPDATE jobs SET attempts = 1 WHERE id = :id"), {"id": first.id})
        await session.commit()
    runs: list[list[int]] = []
    await counting_worker(app, tenant, runs).drain()

    assert runs[0] == first.payload["event_ids"] and len(runs) == 2
    events, history = await applied(database, tenant)
    assert len(events) == 6 == len(set(events))
    assert history == ["v1", "v2", "v3"]


async def test_a_takeover_stops_at_a_job_that_is_not_ready(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await send_separately(client, tenant, 3)
    first, second, third = await jobs_of(database, tenant)
    async with database.write_session() as session:  # leased far ahead to a worker elsewhere
        await session.execute(
            text(
                "UPDATE jobs SET state = 'running', lease_owner = 'elsewhere',"
                " lease_expires_at = :far WHERE id = :id"
            ).bindparams(bindparam("far", type_=UTCDateTime())),
            {"id": second.id, "far": datetime.now(UTC) + timedelta(hours=1)},
        )
        await session.commit()
    runs: list[list[int]] = []
    try:
        await counting_worker(app, tenant, runs).drain()
        assert runs == [first.payload["event_ids"]]
        events, _ = await applied(database, tenant)
        assert events == sorted(first.payload["event_ids"])
        assert [job.id for job in await jobs_of(database, tenant)] == [second.id, third.id]
    finally:
        async with database.write_session() as session:
            await session.execute(
                text("DELETE FROM jobs WHERE workspace_id = :ws"), {"ws": tenant.id}
            )
            await session.commit()


async def test_a_job_discarded_meanwhile_is_not_applied(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await send_separately(client, tenant, 3)
    first, second, third = await jobs_of(database, tenant)
    pipeline: Pipeline = app.state.pipeline
    real_review = pipeline.tracking_plans.review

    async def review_then_discard(workspace_id: int, events: list[EventRecord]) -> Review:
        review = await real_review(workspace_id, events)
        if workspace_id == tenant.id:  # by hand, between the read and the write transaction
            async with database.write_session() as session:
                await session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": third.id})
                await session.commit()
        return review

    pipeline.tracking_plans.review = review_then_discard  # type: ignore[method-assign]
    try:
        runs: list[list[int]] = []
        await counting_worker(app, tenant, runs).drain()
    finally:
        del pipeline.tracking_plans.review
    events, history = await applied(database, tenant)
    assert events == sorted(first.payload["event_ids"] + second.payload["event_ids"])
    assert history == ["v1", "v2"]
    assert await jobs_of(database, tenant) == []


def devices_in_separate_shards(count: int) -> list[str]:
    """Anonymous ids of `count` senders whose events go under different serial keys."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        device = f"device-{n}"
        found.setdefault(shard_of(StoredEvent(0, 0, "", None, device)), device)
        n += 1
    return list(found.values())


async def send_from(client: httpx.AsyncClient, tenant: Tenant, device: str, n: int) -> None:
    message = {
        "type": "track",
        "event": "Viewed",
        "anonymousId": device,
        "messageId": f"{device}-{n}",
    }
    sent = await client.post("/v1/batch", json={"batch": [message]}, auth=tenant.writer)
    assert sent.json()["accepted"] == 1


async def test_under_light_load_one_sqlite_run_serves_every_waiting_sender(
    backend: str, app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    devices = devices_in_separate_shards(3)
    for device in devices:
        await send_from(client, tenant, device, 1)
    jobs = await jobs_of(database, tenant)
    assert len({job.serial_key for job in jobs}) == 3
    runs: list[list[int]] = []
    await counting_worker(app, tenant, runs, concurrency=1).drain()

    # SQLite has one writer: a run whose own queue is short takes the other keys' queues.
    # PostgreSQL runs the keys apart, so that workers share them.
    assert len(runs) == (1 if backend == "sqlite" else 3)
    events, _ = await applied(database, tenant)
    assert events == sorted(i for job in jobs for i in job.payload["event_ids"])
    assert await jobs_of(database, tenant) == []


async def test_a_run_with_a_long_queue_of_its_own_leaves_the_other_keys(
    app: FastAPI,
    client: httpx.AsyncClient,
    database: Database,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline_module, "CROSS_KEY_BELOW", 1)  # one event is a long queue
    for device in devices_in_separate_shards(3):
        await send_from(client, tenant, device, 1)
    runs: list[list[int]] = []
    await counting_worker(app, tenant, runs, concurrency=1).drain()

    assert len(runs) == 3  # so that other workers can take the other keys at once
    events, _ = await applied(database, tenant)
    assert len(events) == 3
    assert await jobs_of(database, tenant) == []


async def test_a_queue_whose_first_job_runs_elsewhere_is_not_taken_over(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    mine, theirs = devices_in_separate_shards(2)
    await send_from(client, tenant, mine, 1)
    await send_from(client, tenant, theirs, 1)
    await send_from(client, tenant, theirs, 2)
    first, running, waiting = await jobs_of(database, tenant)
    async with database.write_session() as session:  # leased far ahead to a worker elsewhere
        await session.execute(
            text(
                "UPDATE jobs SET state = 'running', lease_owner = 'elsewhere',"
                " lease_expires_at = :far WHERE id = :id"
            ).bindparams(bindparam("far", type_=UTCDateTime())),
            {"id": running.id, "far": datetime.now(UTC) + timedelta(hours=1)},
        )
        await session.commit()
    runs: list[list[int]] = []
    try:
        await counting_worker(app, tenant, runs, concurrency=1).drain()
        assert runs == [first.payload["event_ids"]]
        events, _ = await applied(database, tenant)
        assert events == sorted(first.payload["event_ids"])  # nothing of the other queue
        assert [job.id for job in await jobs_of(database, tenant)] == [running.id, waiting.id]
    finally:
        async with database.write_session() as session:
            await session.execute(
                text("DELETE FROM jobs WHERE workspace_id = :ws"), {"ws": tenant.id}
            )
            await session.commit()


async def test_a_job_id_reused_meanwhile_is_not_mistaken_for_the_job_read(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await send_separately(client, tenant, 3)
    *_, third = await jobs_of(database, tenant)
    pipeline: Pipeline = app.state.pipeline
    real_review = pipeline.tracking_plans.review

    async def review_then_replace(workspace_id: int, events: list[EventRecord]) -> Review:
        review = await real_review(workspace_id, events)
        if workspace_id == tenant.id and not replaced:
            replaced.append(True)  # the newest job goes, and SQLite gives its id to the next
            async with database.write_session() as session:
                await session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": third.id})
                await session.commit()
            await send_separately(client, tenant, 1, first=4)
        return review

    replaced: list[bool] = []
    pipeline.tracking_plans.review = review_then_replace  # type: ignore[method-assign]
    try:
        await counting_worker(app, tenant, []).drain()
    finally:
        del pipeline.tracking_plans.review
    events, history = await applied(database, tenant)
    assert history == ["v1", "v2", "v4"]  # the newcomer's events were applied, not lost
    assert len(events) == 6 == len(set(events))
    assert await jobs_of(database, tenant) == []
