"""Accepted events become profiles through durable jobs, exactly once, through crashes,
re-runs and database restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from clarion import pipeline as pipeline_module
from clarion.core.clock import FrozenClock, SystemClock
from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import Worker
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.records import EventRecord
from clarion.journeys.runtime import Runtime
from clarion.pipeline import Pipeline
from clarion.profiles import computed as computed_traits
from clarion.profiles import service as profiles
from tests.conftest import Tenant
from tests.support import plan_of

SHOPPER = [
    {"type": "page", "name": "Home", "anonymousId": "device-9", "messageId": "p1"},
    {
        "type": "identify",
        "userId": "ada",
        "anonymousId": "device-9",
        "traits": {"email": "Ada@Example.com", "first_name": "Ada"},
        "messageId": "i1",
    },
    {
        "type": "track",
        "event": "Order Completed",
        "userId": "ada",
        "properties": {"order_id": "o-1", "revenue": 30.5, "currency": "EUR"},
        "messageId": "t1",
    },
]


def pipeline_worker(app: FastAPI, clock: Any = None) -> Worker:
    """A worker running the app's pipeline, as `clarion worker` does."""
    pipeline: Pipeline = app.state.pipeline
    return Worker(app.state.database, pipeline.registry(), clock=clock or SystemClock())


async def ada(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    found = await client.get("/api/v1/profiles", params={"user_id": "ada"}, headers=tenant.admin)
    [profile] = found.json()["items"]
    return profile  # type: ignore[no-any-return]


async def pending_jobs(database: Database, tenant: Tenant) -> list[Job]:
    async with database.read_session() as session:
        query = select(Job).where(Job.workspace_id == tenant.id, Job.kind == PROCESS_EVENTS)
        return list((await session.scalars(query)).all())


async def test_events_become_one_profile(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await client.post("/v1/batch", json={"batch": SHOPPER}, auth=tenant.writer)
    assert sent.json()["accepted"] == 3
    # Ingestion only stores: no profile exists until the jobs run.
    nobody = await client.get("/api/v1/profiles", params={"user_id": "ada"}, headers=tenant.admin)
    assert nobody.json()["items"] == []

    await pipeline_worker(app).drain()
    profile = await ada(client, tenant)
    assert profile["traits"]["first_name"] == "Ada"
    assert profile["computed"]["orders"] == 1
    assert profile["computed"]["page_views"] == 1
    assert {(i["kind"], i["value"]) for i in profile["identities"]} >= {
        ("user_id", "ada"),
        ("anonymous_id", "device-9"),
        ("email", "ada@example.com"),
    }
    timeline = await client.get(f"/api/v1/profiles/{profile['id']}/events", headers=tenant.admin)
    assert {e["message_id"] for e in timeline.json()["items"]} == {"p1", "i1", "t1"}
    assert await pending_jobs(app.state.database, tenant) == []


async def test_a_batch_processed_twice_is_applied_once(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await client.post("/v1/batch", json={"batch": SHOPPER}, auth=tenant.writer)
    jobs = await pending_jobs(database, tenant)
    # The same events handed on again (a re-run after a lost acknowledgement).
    async with database.write_session() as session:
        again = [NewJob(tenant.id, PROCESS_EVENTS, job.payload) for job in jobs]
        await enqueue(session, again, now=datetime.now(UTC))
        await session.commit()
    await pipeline_worker(app).drain()
    profile = await ada(client, tenant)
    assert profile["computed"]["orders"] == 1
    assert profile["computed"]["event_counts"] == {"Order Completed": 1}


async def test_a_crashed_worker_loses_nothing_and_applies_nothing_twice(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await client.post("/v1/batch", json={"batch": SHOPPER}, auth=tenant.writer)
    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=5))
    crashed = pipeline_worker(app, clock)
    claimed = await crashed._maintain_and_claim()  # it dies holding the batch
    assert claimed

    clock.advance(timedelta(minutes=2))  # its lease expires
    await pipeline_worker(app, clock).drain()
    assert (await ada(client, tenant))["computed"]["orders"] == 1


async def test_a_database_restart_mid_batch_is_retried_and_applied_once(
    backend: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    database: Database,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite is a file in the process: it has no server to restart")
    one_device = [{**message, "anonymousId": "device-9"} for message in SHOPPER]
    await client.post("/v1/batch", json={"batch": one_device}, auth=tenant.writer)  # one job
    dsn = database.url.replace("postgresql+asyncpg://", "postgresql://")
    real_apply = profiles.apply_events
    restarts = []

    async def apply_then_lose_the_server(
        session: Any, **kwargs: Sequence[EventRecord]
    ) -> profiles.AppliedBatch:
        applied = await real_apply(session, **kwargs)  # type: ignore[arg-type]
        if not restarts:  # the server goes away before this transaction commits
            restarts.append(True)
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
        return applied

    monkeypatch.setattr(profiles, "apply_events", apply_then_lose_the_server)
    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=5))
    worker = pipeline_worker(app, clock)
    await worker.drain()
    [failed] = await pending_jobs(database, tenant)
    assert failed.state == "ready" and failed.attempts == 1 and failed.last_error
    nobody = await client.get("/api/v1/profiles", params={"user_id": "ada"}, headers=tenant.admin)
    assert nobody.json()["items"] == []  # nothing of the lost transaction was kept

    clock.advance(timedelta(minutes=1))
    await worker.drain()
    assert (await ada(client, tenant))["computed"]["orders"] == 1
    assert await pending_jobs(database, tenant) == []


async def test_concurrent_workers_build_the_same_profiles(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    """One customer's anonymous and identified events sit in different shards, so workers
    apply them at the same time: profiles must come out whole, counted once."""
    customers = 12
    batch = []
    for n in range(customers):
        device, user = f"device-{n}", f"user-{n}"
        batch += [
            {"type": "page", "name": "Home", "anonymousId": device, "messageId": f"p{n}"},
            {"type": "track", "event": "Product Viewed", "userId": user, "messageId": f"v{n}"},
            {"type": "identify", "userId": user, "anonymousId": device, "messageId": f"i{n}"},
            {
                "type": "track",
                "event": "Order Completed",
                "userId": user,
                "properties": {"revenue": 10, "currency": "USD"},
                "messageId": f"o{n}",
            },
        ]
    sent = await client.post("/v1/batch", json={"batch": batch}, auth=tenant.writer)
    assert sent.json()["accepted"] == len(batch)

    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=5))
    workers = [pipeline_worker(app, clock) for _ in range(3)]
    for _ in range(20):  # conflicts between workers end in retries: run them out
        for worker in workers:
            worker.concurrency = 2
        await asyncio.gather(*(w.drain() for w in workers))
        if not await pending_jobs(database, tenant):
            break
        clock.advance(timedelta(hours=2))
    assert await pending_jobs(database, tenant) == []

    listed = await client.get("/api/v1/profiles", params={"limit": 100}, headers=tenant.admin)
    profiles = listed.json()["items"]
    assert len(profiles) == customers
    for profile in profiles:
        kinds = {i["kind"] for i in profile["identities"]}
        assert kinds == {"user_id", "anonymous_id"}
        assert profile["computed"]["orders"] == 1
        assert profile["computed"]["page_views"] == 1
        assert profile["computed"]["event_counts"] == {"Product Viewed": 1, "Order Completed": 1}
        events = await client.get(f"/api/v1/profiles/{profile['id']}/events", headers=tenant.admin)
        assert len(events.json()["items"]) == 4


async def test_a_run_loads_its_events_by_key(database: Database, tenant: Tenant) -> None:
    """On PostgreSQL each event of a run is looked up by primary key, the workspace checked
    after: with no statistics (a log just filled) the planner otherwise preferred reading
    the workspace's events, or its index, for every id."""
    if database.is_sqlite:
        return  # SQLite plans from the statistics each process samples (core/database.py)

    async def load() -> None:
        async with database.read_session() as session:
            await pipeline_module._load_events(session, tenant.id, [1, 2, 3])

    plan = await plan_of(database, load, "unnest")
    assert "Index Scan using pk_events on events" in plan, plan
    assert "workspace_id_timestamp" not in plan and "Seq Scan on events" not in plan, plan


async def test_an_event_no_code_can_apply_is_parked_and_holds_back_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    database: Database,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = computed_traits.add_event

    def add_event(computed: dict[str, Any], seen: computed_traits.Seen) -> None:
        if seen.name == "Poisoned":
            raise ValueError("no code can apply this event")
        counted(computed, seen)

    monkeypatch.setattr(computed_traits, "add_event", add_event)
    sender = [
        {"type": "track", "event": "Viewed", "userId": "ada", "messageId": "v1"},
        {"type": "track", "event": "Poisoned", "userId": "ada", "messageId": "x1"},
        {"type": "track", "event": "Added", "userId": "ada", "messageId": "a1"},
    ]
    await client.post("/v1/batch", json={"batch": sender}, auth=tenant.writer)
    [job] = await pending_jobs(database, tenant)
    assert len(job.payload["event_ids"]) == 3
    clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=10))
    worker = pipeline_worker(app, clock)
    for _ in range(pipeline_module.ISOLATE_AFTER_ATTEMPTS):
        await worker.drain()  # the whole batch fails, and is retried later
        assert [j.state for j in await pending_jobs(database, tenant)] == ["ready"]
        clock.advance(timedelta(hours=2))
    await worker.drain()  # event by event: the other two are applied, in order
    profile = await ada(client, tenant)
    assert profile["computed"]["event_counts"] == {"Viewed": 1, "Added": 1}
    [parked] = await pending_jobs(database, tenant)
    poisoned = {e["message_id"]: e["id"] for e in await events_of(client, tenant)}["x1"]
    assert (parked.state, parked.payload, parked.serial_key) == (
        "dead",
        {"event_ids": [poisoned]},
        None,
    )
    assert "no code can apply this event" in (parked.last_error or "")

    # The sender's later events are not held back by it.
    later = {"type": "track", "event": "Viewed", "userId": "ada", "messageId": "v2"}
    await client.post("/v1/batch", json={"batch": [later]}, auth=tenant.writer)
    await worker.drain()
    assert (await ada(client, tenant))["computed"]["event_counts"]["Viewed"] == 2

    # Once the cause is fixed, the operator's retry applies it, once.
    monkeypatch.setattr(computed_traits, "add_event", counted)
    retried = await client.post(f"/api/v1/jobs/{parked.id}/retry", headers=tenant.admin)
    assert retried.is_success, retried.text
    await worker.drain()
    assert (await ada(client, tenant))["computed"]["event_counts"] == {
        "Viewed": 2,
        "Added": 1,
        "Poisoned": 1,
    }
    assert await pending_jobs(database, tenant) == []


async def test_an_event_failing_after_its_segments_leaves_their_counts_alone(
    app: FastAPI,
    client: httpx.AsyncClient,
    database: Database,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Event by event, an event that fails once its segments were decided takes their
    entries and their count changes with it; the others' count."""
    segment_ids = {}
    for name in ("Viewed", "Poisoned"):
        rule = {"type": "event", "event": name}
        created = await client.post(
            "/api/v1/segments", json={"name": name, "rule": rule}, headers=tenant.admin
        )
        assert created.status_code == 201, created.text
        segment_ids[name] = created.json()["id"]
    on_events = Runtime.on_events

    async def failing_on_events(self: Runtime, session: Any, **kwargs: Any) -> None:
        if any(e.name == "Poisoned" for batch in kwargs["events"].values() for e in batch):
            raise ValueError("no journey code can take this event")
        await on_events(self, session, **kwargs)

    monkeypatch.setattr(Runtime, "on_events", failing_on_events)
    sender = [
        {"type": "track", "event": "Viewed", "userId": "ada", "messageId": "v1"},
        {"type": "track", "event": "Poisoned", "userId": "ada", "messageId": "x1"},
    ]
    await client.post("/v1/batch", json={"batch": sender}, auth=tenant.writer)
    clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=10))
    worker = pipeline_worker(app, clock)
    for _ in range(pipeline_module.ISOLATE_AFTER_ATTEMPTS):
        await worker.drain()  # the whole batch fails, and is retried later
        clock.advance(timedelta(hours=2))
    await worker.drain()  # event by event

    for name, members in (("Viewed", 1), ("Poisoned", 0)):
        segment = await client.get(f"/api/v1/segments/{segment_ids[name]}", headers=tenant.admin)
        assert segment.json()["member_count"] == members, name
        listed = await client.get(
            f"/api/v1/segments/{segment_ids[name]}/members", headers=tenant.admin
        )
        assert len(listed.json()["items"]) == members, name
    assert [job.state for job in await pending_jobs(database, tenant)] == ["dead"]


async def events_of(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    listed = await client.get("/api/v1/events", headers=tenant.admin)
    items: list[dict[str, Any]] = listed.json()["items"]
    return items
