"""Stored events are handed to the pipeline by jobs enqueued in the storing transaction."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.ingest.jobs import PROCESS_EVENTS, StoredEvent, processing_jobs, shard_of
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
