"""The batch writers' codec binds values as the column types would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from clarion.core.database import sqlite_time
from clarion.profiles.batch import _Codec


def test_sqlite_times_are_the_text_utcdatetime_stores() -> None:
    """The codec's SQLite text (written without `astimezone` for UTC values) is the one
    `UTCDateTime` stores, for UTC and other zones alike."""
    engine = create_async_engine("sqlite+aiosqlite://")
    codec = _Codec(AsyncSession(engine))
    now = datetime(2026, 11, 24, 4, 5, 6, 789, tzinfo=UTC)
    east = datetime(2026, 11, 24, 9, 5, 6, 789, tzinfo=timezone(timedelta(hours=5)))
    later = now + timedelta(microseconds=1)
    for value in (now, east, now, later, now, east, later):
        assert codec.bind_time(value) == sqlite_time(value)
    assert codec.bind_time(east) == codec.bind_time(now) == "2026-11-24 04:05:06.000789"
    assert codec.bind_time(None) is None
