"""Clarion's own events: stored as the event log stores a library's track events, each
messageId once, with or without their processing jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.ingest.internal import (
    INTERNAL_SOURCE,
    InternalEvent,
    append_events,
    emit_events,
    is_activity,
)
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from tests.conftest import Tenant

NOW = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=UTC)


def entered(tenant: Tenant, n: int, **ids: str | None) -> InternalEvent:
    return InternalEvent(
        workspace_id=tenant.id,
        message_id=f"clarion:Segment Entered:{n}",
        name="Segment Entered",
        user_id=ids.get("user_id"),
        anonymous_id=ids.get("anonymous_id"),
        timestamp=NOW - timedelta(seconds=n),
        properties={"segment_id": n, "segment_name": "Büyers ✓", "nested": {"a": [1, None]}},
    )


async def test_appended_events_are_stored_whole_once(database: Database, tenant: Tenant) -> None:
    events = [
        entered(tenant, 1, user_id="ada"),
        entered(tenant, 2, anonymous_id="device-9"),
        entered(tenant, 3),  # neither id: no profile to be about, not stored
    ]
    async with database.write_session() as session:
        records = await append_events(session, events, now=NOW)
        again = await append_events(session, events[:1], now=NOW)  # a retried decision
        await session.commit()
    assert [r.message_id for r in records] == [events[0].message_id, events[1].message_id]
    assert again == []
    assert all(r.source_id == INTERNAL_SOURCE and not is_activity(r.source_id) for r in records)
    async with database.read_session() as session:
        rows = (
            await session.scalars(
                select(Event).where(Event.workspace_id == tenant.id).order_by(Event.id)
            )
        ).all()
        jobs = await session.scalar(
            select(func.count()).where(Job.workspace_id == tenant.id, Job.kind == PROCESS_EVENTS)
        )
    assert jobs == 0  # the caller applies them
    assert [r.id for r in rows] == [r.id for r in records]
    first, second = rows
    assert (first.user_id, first.anonymous_id) == ("ada", None)
    assert (second.user_id, second.anonymous_id) == (None, "device-9")
    for row, event in zip(rows, events[:2], strict=True):
        assert row.source_id == INTERNAL_SOURCE
        assert (row.type, row.name) == ("track", "Segment Entered")
        assert row.timestamp == row.original_timestamp == event.timestamp
        assert row.received_at == NOW
        assert row.properties == event.properties
        assert row.context == {"library": {"name": "clarion"}}
        assert (row.group_id, row.previous_id, row.sent_at) == (None, None, None)
        assert (row.traits, row.integrations, row.extra) == (None, None, None)


async def test_emitted_events_get_processing_jobs(database: Database, tenant: Tenant) -> None:
    async with database.write_session() as session:
        stored = await emit_events(session, [entered(tenant, 4, user_id="bob")], now=NOW)
        await session.commit()
    async with database.read_session() as session:
        jobs = (
            await session.scalars(
                select(Job).where(Job.workspace_id == tenant.id, Job.kind == PROCESS_EVENTS)
            )
        ).all()
    assert [job.payload["event_ids"] for job in jobs] == [[stored[0].id]]


def test_activity_is_every_source_but_clarion() -> None:
    assert not is_activity(uuid.UUID(int=0))  # an equal UUID read back from the database
    assert is_activity(uuid.uuid4())
