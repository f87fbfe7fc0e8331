"""The database layer: UTC round trips, the append-only log, SQLite's single writer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import DateTime, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from clarion.core import database as database_module
from clarion.core import migrations
from clarion.core.database import Database, UTCDateTime, async_url
from clarion.ingest.models import Event
from clarion.ingest.service import accept_messages
from clarion.ingest.writer import EventWriter
from tests.conftest import Tenant


async def _store(database: Database, tenant: Tenant, count: int, *, prefix: str) -> int:
    accepted = accept_messages(
        [
            orjson.dumps(
                {"type": "track", "userId": "u", "event": "E", "messageId": f"{prefix}{i}"}
            )
            for i in range(count)
        ],
        workspace_id=tenant.id,
        source_id=tenant.source_id,
        received_at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    writer = EventWriter(database)
    try:
        return await writer.store(accepted.rows)
    finally:
        await writer.close()


async def test_times_come_back_aware_and_in_utc(database: Database, tenant: Tenant) -> None:
    await _store(database, tenant, 1, prefix="utc")
    async with database.read_session() as session:
        event = await session.scalar(select(Event).where(Event.workspace_id == tenant.id))

    assert event is not None
    assert event.received_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert event.received_at.tzinfo is UTC


async def test_events_cannot_be_updated(database: Database, tenant: Tenant) -> None:
    await _store(database, tenant, 1, prefix="frozen")
    async with database.write_session() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(
                update(Event).where(Event.workspace_id == tenant.id).values(name="changed")
            )
        await session.rollback()


async def test_concurrent_writers_never_see_database_locked(
    database: Database, tenant: Tenant
) -> None:
    results = await asyncio.gather(
        *(_store(database, tenant, 10, prefix=f"w{n}-") for n in range(20))
    )

    assert results == [10] * 20
    async with database.read_session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM events WHERE workspace_id = :w"), {"w": tenant.id}
        )
    assert count == 200


def test_database_urls_get_the_async_driver() -> None:
    assert async_url("sqlite:///var/clarion.db") == "sqlite+aiosqlite:///var/clarion.db"
    assert async_url("postgresql://u:p@h:5432/d") == "postgresql+asyncpg://u:p@h:5432/d"
    assert async_url("postgres://u@h/d") == "postgresql+asyncpg://u@h/d"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://u@h/d")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), sqlite.dialect())
    bind = UTCDateTime().bind_processor(sqlite.dialect())
    assert bind is not None
    with pytest.raises(ValueError, match="naive"):
        bind(datetime(2026, 1, 1))


def test_sqlite_binds_datetimes_as_sqlalchemy_stores_them() -> None:
    """The one-step SQLite bind writes the very text SQLite's DATETIME wrote for the naive
    UTC datetime: rows written before and after compare and sort alike."""
    dialect = sqlite.dialect()
    bind = UTCDateTime().bind_processor(dialect)
    stored = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None and stored is not None
    plus_five = timezone(timedelta(hours=5))
    for moment in (
        datetime(2026, 11, 24, 1, 2, 3, 4, tzinfo=UTC),
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, tzinfo=plus_five),
        datetime(2026, 3, 1, 0, 0, 0, 999_999, tzinfo=UTC),
    ):
        assert bind(moment) == stored(moment.astimezone(UTC).replace(tzinfo=None))
        assert bind(moment) == bind(moment)  # again, from the cache
    # One instant in two zones is one text (the cache's keys are instants); the next
    # microsecond is another.
    utc = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert bind(datetime(2026, 3, 1, 5, 0, tzinfo=plus_five)) == bind(utc)
    assert bind(utc) == "2026-03-01 00:00:00.000000"
    assert bind(utc + timedelta(microseconds=1)) == "2026-03-01 00:00:00.000001"
    assert bind(None) is None


async def _run_briefly(work: Coroutine[Any, Any, None]) -> None:
    """Run a background loop for 0.2 s (its interval made short), then cancel it."""
    task = asyncio.create_task(work)
    await asyncio.sleep(0.2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_sqlite_background_checkpoints_copy_the_wal_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite only: PostgreSQL checkpoints itself.
    main_file = tmp_path / "checkpoints.db"
    fresh_database = Database(f"sqlite:///{main_file}")
    await migrations.upgrade(fresh_database)
    async with fresh_database.write_session() as session:
        for n in range(200):
            await session.execute(
                text("INSERT INTO workspaces (slug, name, created_at) VALUES (:s, :n, :t)"),
                {"s": f"w{n}", "n": "x" * 2000, "t": "2026-01-01 00:00:00"},
            )
        await session.commit()
    size_before = main_file.stat().st_size  # the rows are in the WAL only

    monkeypatch.setattr(database_module, "SQLITE_CHECKPOINT_INTERVAL_S", 0.01)
    await _run_briefly(fresh_database.checkpoint_continuously())
    await fresh_database.dispose()

    assert main_file.stat().st_size > size_before + 200 * 2000


async def _plan(database: Database, query: str) -> str:
    async with database.read_session() as session:
        rows = await session.execute(text(f"EXPLAIN QUERY PLAN {query}"))
        return " | ".join(str(row[3]) for row in rows)


async def test_sqlite_statistics_make_lookups_by_key_use_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite only: PostgreSQL's autovacuum keeps its statistics. Without any, SQLite's
    # planner read a batch of events or profiles by key through the workspace's index,
    # that is every row of the workspace.
    database = Database(f"sqlite:///{tmp_path / 'plans.db'}")
    await migrations.upgrade(database)
    async with database.write_session() as session:
        await session.execute(
            text("INSERT INTO workspaces (id, slug, name, created_at) VALUES (1, 'w', 'W', :t)"),
            {"t": "2026-01-01 00:00:00"},
        )
        for n in range(1_000):
            await session.execute(
                text(
                    "INSERT INTO profiles (id, workspace_id, canonical_id, traits, trait_times,"
                    " computed, created_at, updated_at)"
                    " VALUES (:id, 1, :canonical, '{}', '{}', '{}', :t, :t)"
                ),
                {
                    "id": f"{n:032x}",
                    "canonical": f"{n - 1:032x}" if n in (1, 501) else None,  # two merged
                    "t": "2026-01-01 00:00:00",
                },
            )
        await session.commit()
    by_key = "SELECT id FROM profiles WHERE workspace_id = 1 AND id IN ('a', 'b', 'c')"
    trees = (
        "SELECT id, canonical_id FROM profiles WHERE workspace_id = 1"
        " AND (id IN ('a', 'b') OR canonical_id IN ('a', 'b'))"
    )
    assert "workspace_id_created_at" in await _plan(database, by_key)  # the guess, unfixed

    monkeypatch.setattr(database_module, "SQLITE_STATISTICS_INTERVAL_S", 0.01)
    await _run_briefly(database.keep_statistics_fresh())

    assert (
        await _plan(database, by_key)
        == "SEARCH profiles USING INDEX sqlite_autoindex_profiles_1 (id=?)"
    )
    # Merged rows only in the canonical id's index: a tree's rows by two lookups, not a scan.
    assert await _plan(database, trees) == (
        "MULTI-INDEX OR | INDEX 1 | SEARCH profiles USING INDEX sqlite_autoindex_profiles_1"
        " (id=?) | INDEX 2 | SEARCH profiles USING INDEX ix_profiles_canonical_id"
        " (canonical_id=?)"
    )
    await database.dispose()
