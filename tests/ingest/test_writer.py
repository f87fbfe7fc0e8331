"""Group commit: concurrent requests share transactions, keep their own counts, fail alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from clarion.core.database import Database
from clarion.ingest.models import Event
from clarion.ingest.service import accept_messages
from clarion.ingest.writer import EventWriter
from tests.conftest import Tenant

Writers = Callable[..., EventWriter]


@pytest.fixture
async def writers() -> AsyncIterator[Writers]:
    """Makes EventWriters and closes them after the test."""
    made: list[EventWriter] = []

    def make(database: Database, **options: Any) -> EventWriter:
        made.append(EventWriter(database, **options))
        return made[-1]

    yield make
    for writer in made:
        await writer.close()


def rows(
    tenant: Tenant, ids: list[str], *, workspace_id: int | None = None
) -> list[dict[str, Any]]:
    accepted = accept_messages(
        [orjson.dumps({"type": "track", "userId": "u", "event": "E", "messageId": i}) for i in ids],
        workspace_id=workspace_id or tenant.id,
        source_id=tenant.source_id,
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return accepted.rows


async def stored_ids(database: Database, tenant: Tenant) -> list[str]:
    async with database.read_session() as session:
        query = select(Event.message_id).where(Event.workspace_id == tenant.id)
        return sorted((await session.scalars(query)).all())


async def test_concurrent_requests_each_get_their_own_count(
    writers: Writers, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    writer = writers(database, transactions=1)  # one group after the first: first one wins
    results = await asyncio.gather(
        writer.store(rows(tenant, ["a", "b"])),
        writer.store(rows(tenant, ["b", "c"])),  # "b" is the first request's
        writer.store(rows(other_tenant, ["a", "b"])),  # another workspace: its own ids
        writer.store(rows(tenant, ["a", "b", "c"])),  # a retry of what is already there
    )

    assert results == [2, 1, 2, 0]
    assert await stored_ids(database, tenant) == ["a", "b", "c"]
    assert await stored_ids(database, other_tenant) == ["a", "b"]


async def test_a_failing_request_does_not_fail_the_others_in_its_group(
    writers: Writers, database: Database, tenant: Tenant
) -> None:
    writer = writers(database)
    no_such_workspace = 2_000_000_000
    results = await asyncio.gather(
        writer.store(rows(tenant, ["first"])),
        writer.store(rows(tenant, ["good"])),
        writer.store(rows(tenant, ["bad"], workspace_id=no_such_workspace)),
        return_exceptions=True,
    )

    assert results[0] == 1
    assert results[1] == 1
    assert isinstance(results[2], Exception)
    assert "foreign key" in str(results[2]).lower()
    assert await stored_ids(database, tenant) == ["first", "good"]
    async with database.read_session() as session:
        orphans = (
            select(func.count()).select_from(Event).where(Event.workspace_id == no_such_workspace)
        )
        assert await session.scalar(orphans) == 0


async def test_many_concurrent_requests_are_all_stored(
    writers: Writers, database: Database, tenant: Tenant
) -> None:
    writer = writers(database)
    results = await asyncio.gather(
        *(writer.store(rows(tenant, [f"r{r}-m{m}" for m in range(10)])) for r in range(30))
    )

    assert results == [10] * 30
    assert len(await stored_ids(database, tenant)) == 300
    assert writer.commits < 30  # requests shared transactions


async def test_nothing_to_store(writers: Writers, database: Database, tenant: Tenant) -> None:
    assert await writers(database).store(rows(tenant, [])) == 0


async def test_parallel_transactions_store_each_message_once(
    writers: Writers, database: Database, tenant: Tenant
) -> None:
    writer = writers(database, transactions=4)
    overlapping = [[f"m{i}", f"m{i + 1}", f"m{i + 2}"] for i in range(20)]
    results = await asyncio.gather(*(writer.store(rows(tenant, ids)) for ids in overlapping))

    assert sum(results) == 22  # m0..m21, whichever request stored each
    assert await stored_ids(database, tenant) == sorted(f"m{i}" for i in range(22))


async def test_a_database_that_cannot_be_opened_fails_the_call_instead_of_hanging(
    writers: Writers, tenant: Tenant, tmp_path: Path
) -> None:
    # SQLite only: the writer thread opens its own connection.
    database = Database(f"sqlite:///{tmp_path / 'gone'}/events.db")
    (tmp_path / "gone").rmdir()  # the folder the file would live in
    writer = writers(database)

    for _ in range(2):  # and the writer still answers after a failure
        with pytest.raises(sqlite3.OperationalError):
            await asyncio.wait_for(writer.store(rows(tenant, ["x"])), timeout=10)
    await database.dispose()
