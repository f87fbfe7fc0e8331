"""Stored events are handed to the pipeline by jobs enqueued in the storing transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import enqueue
from clarion.ingest.jobs import PROCESS_EVENTS, StoredEvent, processing_jobs, shard_of
from clarion.ingest.models import Event
from clarion.ingest.service import Shared, accept_messages
from clarion.ingest.store import insert_events_postgres
from tests.conftest import Tenant


async def processing_jobs_of(database: Database, tenant: Tenant) -> list[Job]:
    async with database.read_session() as session:
        query = select(Job).where(Job.workspace_id == tenant.id, Job.kind == PROCESS_EVENTS)
        return list((await session.scalars(query.order_by(Job.id))).all())


async def test_every_stored_event_gets_processed_once(
    client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    batch = {
        "batch": [
            {"type": "track", "event": "Viewed", "anonymousId": "device-1", "messageId": "m1"},
            {"type": "identify", "userId": "ada", "anonymousId": "device-1", "messageId": "m2"},
            {"type": "track", "event": "Viewed", "userId": "bob", "messageId": "m3"},
        ]
    }
    sent = await client.post("/v1/batch", json=batch, auth=tenant.writer)
    assert sent.json()["accepted"] == 3
    events = (await client.get("/api/v1/events", headers=tenant.admin)).json()["items"]
    ids = {event["message_id"]: event["id"] for event in events}

    jobs = await processing_jobs_of(database, tenant)
    queued = sorted(i for job in jobs for i in job.payload["event_ids"])
    assert queued == sorted(ids.values())
    [device_job] = [job for job in jobs if ids["m1"] in job.payload["event_ids"]]
    # One sender's events travel together, in order, under one serial key.
    assert device_job.payload["event_ids"][:2] == [ids["m1"], ids["m2"]]
    assert all(job.state == "ready" and job.serial_key for job in jobs)

    again = await client.post("/v1/batch", json=batch, auth=tenant.writer)
    assert again.json()["accepted"] == 0
    assert len(await processing_jobs_of(database, tenant)) == len(jobs)  # nothing new to do


def test_senders_shard_stably() -> None:
    one = StoredEvent(1, 7, "a", None, "device-1")
    same_sender = StoredEvent(2, 7, "b", "ada", "device-1")
    assert shard_of(one) == shard_of(same_sender)
    jobs = processing_jobs([same_sender, one])
    assert [job.payload for job in jobs] == [{"event_ids": [1, 2]}]
    assert jobs[0].serial_key == f"events:{shard_of(one)}"


async def test_events_and_their_jobs_commit_together_or_not_at_all(
    backend: str, database: Database, tenant: Tenant
) -> None:
    """The fast insert runs in the session's transaction: rolled back, it leaves nothing."""
    if backend != "postgresql":
        pytest.skip("SQLite's event writer has its own transaction; see test_writer.py")
    accepted = accept_messages(
        [b'{"type": "track", "event": "E", "userId": "u", "messageId": "rolled-back"}'],
        workspace_id=tenant.id,
        source_id=tenant.source_id,
        received_at=datetime.now(UTC),
        shared=Shared(),
    )
    async with database.write_session() as session:
        stored = await insert_events_postgres(session, accepted.rows)
        await enqueue(session, processing_jobs(stored), now=datetime.now(UTC))
        await session.rollback()
    async with database.read_session() as session:
        assert await session.scalar(select(Event.id).where(Event.workspace_id == tenant.id)) is None
    assert await processing_jobs_of(database, tenant) == []
