"""Loading the demo shop through the ingestion path, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import orjson
import pytest
from sqlalchemy import func, select

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.demo.behaviour import DemoPlan, generate
from clarion.demo.load import DemoRejected, load_demo, store_messages, workspace_has_events
from clarion.ingest.bulk import BATCH_MESSAGES, batches
from clarion.ingest.models import Event
from clarion.ingest.service import MAX_BATCH_BYTES
from tests.conftest import Tenant

PLAN = DemoPlan(seed=3, end=date(2025, 1, 15), customers=30)


async def _count(database: Database, tenant: Tenant) -> int:
    async with database.read_session() as session:
        query = select(func.count()).select_from(Event).where(Event.workspace_id == tenant.id)
        return int(await session.scalar(query) or 0)


async def test_load_stores_every_message_once(database: Database, tenant: Tenant) -> None:
    assert not await workspace_has_events(database, workspace_slug=tenant.slug)
    clock = SystemClock()
    first = await load_demo(database, PLAN, workspace_slug=tenant.slug, clock=clock)
    expected = sum(1 for _ in generate(PLAN))
    assert first.sent == first.stored == expected == await _count(database, tenant)
    assert first.customers == 30 and first.products == 100
    assert "30 customers, 100 products" in first.line()
    assert await workspace_has_events(database, workspace_slug=tenant.slug)

    again = await load_demo(database, PLAN, workspace_slug=tenant.slug, clock=clock)
    assert (again.sent, again.stored) == (expected, 0)  # messageIds de-duplicate the rerun
    assert await _count(database, tenant) == expected


async def test_stored_events_read_back_as_sent(database: Database, tenant: Tenant) -> None:
    plan = DemoPlan(seed=4, end=date(2025, 1, 15), customers=5)
    await load_demo(database, plan, workspace_slug=tenant.slug, clock=SystemClock())
    sent = {m["messageId"]: m for m in map(orjson.loads, generate(plan))}
    async with database.read_session() as session:
        rows = (await session.scalars(select(Event).where(Event.workspace_id == tenant.id))).all()
    assert {row.message_id for row in rows} == set(sent)
    for row in rows:
        message = sent[row.message_id]
        assert row.source_id == tenant.source_id
        assert row.timestamp.isoformat(timespec="milliseconds") == message["timestamp"].replace(
            "Z", "+00:00"
        )
        assert row.user_id == message.get("userId")
        assert row.anonymous_id == message["anonymousId"]
        if message["type"] == "identify":
            assert row.traits == message["traits"]
        elif message["type"] == "track":
            assert row.name == message["event"] and row.properties == message["properties"]


async def test_a_rejected_message_fails_loudly(database: Database, tenant: Tenant) -> None:
    good = next(iter(generate(PLAN)))
    bad = b'{"type": "track", "event": "Order Completed"}'  # neither userId nor anonymousId
    with pytest.raises(DemoRejected, match="userId or anonymousId"):
        await store_messages(
            database,
            [good, bad],
            workspace_id=tenant.id,
            source_id=tenant.source_id,
            clock=SystemClock(),
        )
    assert await _count(database, tenant) == 0


def test_batches_respect_the_http_limits() -> None:
    small = [b"{}"] * (BATCH_MESSAGES * 2 + 1)
    assert [len(b) for b in batches(small, bytes)] == [BATCH_MESSAGES, BATCH_MESSAGES, 1]
    large = [b"x" * 30_000] * 40
    for batch in batches(large, bytes):
        assert sum(len(m) + 1 for m in batch) <= MAX_BATCH_BYTES
    assert sum(len(b) for b in batches(large, bytes)) == 40
