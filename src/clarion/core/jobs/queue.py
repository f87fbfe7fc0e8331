"""Enqueuing durable jobs inside the caller's transaction (the transactional outbox).

A job becomes visible to workers when, and only if, the transaction that enqueued it
commits, together with the state change that caused it. A job whose (kind, dedupe key) is
already waiting or running in the workspace is not enqueued again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import Table, event, insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from clarion.core.database import sqlite_time
from clarion.core.jobs.models import Job
from clarion.core.jobs.wakeup import CHANNEL, notify_local

DEFAULT_MAX_ATTEMPTS = 20
BACKOFF_BASE = timedelta(seconds=2)
BACKOFF_CAP = timedelta(hours=1)
# SQLite inserts jobs through the table, not the ORM entity: a Core executemany skips the
# ORM's bulk path (about 9 us a row).
_JOBS = cast(Table, Job.__table__)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. Smaller `priority` runs first; `run_at` defaults to now."""

    workspace_id: int
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    run_at: datetime | None = None
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    dedupe_key: str | None = None
    serial_key: str | None = None


def _values(job: NewJob, now: datetime) -> dict[str, Any]:
    return {
        "workspace_id": job.workspace_id,
        "kind": job.kind,
        "payload": job.payload,
        "state": "ready",
        "priority": job.priority,
        "run_at": job.run_at or now,
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "dedupe_key": job.dedupe_key,
        "serial_key": job.serial_key,
        "created_at": now,
        "updated_at": now,
    }


async def enqueue(session: AsyncSession, jobs: Sequence[NewJob], *, now: datetime) -> int:
    """Add jobs to the session's transaction; how many were new (not live duplicates).

    Workers are woken when the transaction commits, if any of the jobs is due by `now`;
    those due later are found by the workers' poll (every second), as a wake-up would
    find nothing to claim (a first touch schedules a lapse check for nearly every profile).
    """
    if not jobs:
        return 0
    rows = [_values(job, now) for job in jobs]
    due = any(row["run_at"] <= now for row in rows)
    if session.get_bind().dialect.name == "postgresql":
        inserted = await _insert_postgres(session, rows, wake=due)
    else:
        statement = sqlite_insert(_JOBS).on_conflict_do_nothing().returning(_JOBS.c.id)
        inserted = len((await session.execute(statement, rows)).all())
    if due:
        _notify_local_on_commit(session)
    return inserted


# One round trip on the hot path (ingestion enqueues with every commit): the rows as arrays,
# and the NOTIFY that PostgreSQL delivers to every listening worker on commit.
_POSTGRES_TYPES = {
    "workspace_id": "integer",
    "payload": "jsonb",
    "priority": "smallint",
    "run_at": "timestamptz",
    "attempts": "integer",
    "max_attempts": "integer",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}
_COLUMNS = tuple(_values(NewJob(0, ""), datetime.now(UTC)))
_UNNEST_INSERT = (
    f"INSERT INTO jobs ({', '.join(_COLUMNS)}) SELECT * FROM unnest("  # noqa: S608 - constants
    + ", ".join(
        f"${n}::{_POSTGRES_TYPES.get(column, 'varchar')}[]" for n, column in enumerate(_COLUMNS, 1)
    )
    + ")"
)
_NOTIFY = f"pg_notify('{CHANNEL}', '')"
# With dedupe keys: skip live duplicates and count what was added (and wake the workers).
_DEDUPED = f"WITH added AS ({_UNNEST_INSERT} ON CONFLICT DO NOTHING RETURNING 1) "
_POSTGRES_INSERT = f"{_DEDUPED}SELECT count(*) FROM added"  # noqa: S608 - constants
_POSTGRES_INSERT_WAKING = f"{_DEDUPED}SELECT count(*), {_NOTIFY} FROM added"  # noqa: S608
# Without (the event pipeline's jobs): no speculative insertion. A data-modifying WITH runs
# whether or not its rows are read.
_POSTGRES_INSERT_PLAIN = f"WITH added AS ({_UNNEST_INSERT}) SELECT {_NOTIFY}"


async def _insert_postgres(session: AsyncSession, rows: list[dict[str, Any]], *, wake: bool) -> int:
    arrays = tuple(
        [orjson.dumps(row[c]).decode() if c == "payload" else row[c] for row in rows]
        for c in _COLUMNS
    )
    # Through SQLAlchemy's driver adapter: it opens the session's transaction if need be.
    connection = await session.connection()
    if any(row["dedupe_key"] is not None for row in rows):
        statement = _POSTGRES_INSERT_WAKING if wake else _POSTGRES_INSERT
        result = await connection.exec_driver_sql(statement, arrays)
        inserted: int = result.scalar_one()
        return inserted
    await connection.exec_driver_sql(_POSTGRES_INSERT_PLAIN if wake else _UNNEST_INSERT, arrays)
    return len(rows)


async def park(
    session: AsyncSession, job: NewJob, *, error: str, attempts: int, now: datetime
) -> None:
    """Add `job` to the session's transaction as dead, with `error`: work that failed and
    waits for an operator (`clarion jobs retry`), holding back nothing meanwhile."""
    values = _values(job, now) | {"state": "dead", "attempts": attempts, "last_error": error}
    await session.execute(insert(_JOBS), [values])


async def wake_on_commit(session: AsyncSession) -> None:
    """Wake workers (this process's, and on PostgreSQL every process's) once the session's
    transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        # Delivered by PostgreSQL at commit, to every listening process, or not at all.
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
    _notify_local_on_commit(session)


def _notify_local_on_commit(session: AsyncSession) -> None:
    sync_session = session.sync_session
    if not sync_session.info.get("clarion_wake_on_commit"):
        sync_session.info["clarion_wake_on_commit"] = True
        event.listen(sync_session, "after_commit", _after_commit, once=True)


def _after_commit(session: Session) -> None:
    session.info.pop("clarion_wake_on_commit", None)
    notify_local()


_SQLITE_INSERT = (
    f"INSERT INTO jobs ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant column names
    f"VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT DO NOTHING"
)


def enqueue_sqlite(
    connection: sqlite3.Connection, jobs: Sequence[NewJob], *, now: datetime
) -> None:
    """Add jobs to the transaction open on a plain sqlite3 connection (the event writer's).

    The caller commits, then calls `notify_local()`.
    """
    rows = []
    for job in jobs:
        values = _values(job, now)
        values["payload"] = orjson.dumps(values["payload"]).decode()
        for name in ("run_at", "created_at", "updated_at"):
            values[name] = sqlite_time(values[name])
        rows.append(tuple(values[column] for column in _COLUMNS))
    connection.executemany(_SQLITE_INSERT, rows)
