"""The event log's hot path: appending rows with each driver's fastest bulk statement.

SQLAlchemy's per-value bind processing costs more than the database's own insert at
ingestion rates (about 90 us a row), so the append runs on the driver connection of the
caller's transaction: one multi-row INSERT on SQLite (on the event writer thread's own
connection), one INSERT ... SELECT FROM unnest(arrays) on PostgreSQL.
Values are encoded exactly as SQLAlchemy's column types store them (`UTCDateTime`, `Uuid`;
documents arrive as JSON text), so every other query reads them unchanged.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import sqlite_time
from clarion.ingest.jobs import StoredEvent

COLUMNS = (
    "workspace_id",
    "source_id",
    "message_id",
    "type",
    "name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
    "traits",
    "context",
    "integrations",
    "extra",
)
_TIMES = frozenset({"timestamp", "original_timestamp", "sent_at", "received_at"})
_DOCUMENTS = frozenset({"properties", "traits", "context", "integrations", "extra"})
_POSTGRES_TYPES = {
    "workspace_id": "integer",
    "source_id": "uuid",
    **dict.fromkeys(_TIMES, "timestamptz"),
    **dict.fromkeys(_DOCUMENTS, "jsonb"),
}
_CONFLICT = (
    "ON CONFLICT (workspace_id, message_id) DO NOTHING "
    "RETURNING id, workspace_id, message_id, user_id, anonymous_id"
)
# SQLite binds at most 32,766 values in one statement.
_SQLITE_ROWS_PER_STATEMENT = 32_766 // len(COLUMNS)

# Built from the constant column list above; values are always bound parameters.
_UNNEST = ", ".join(
    f"${n}::{_POSTGRES_TYPES.get(name, 'varchar')}[]" for n, name in enumerate(COLUMNS, 1)
)
_POSTGRES_INSERT = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) SELECT * FROM unnest({_UNNEST}) {_CONFLICT}"  # noqa: S608
)

# Track events Clarion emits itself: one array for each column that varies between them,
# the source, receipt time and context bound once (the other columns stay NULL).
_POSTGRES_INSERT_TRACKS = (  # constant text; values are always bound parameters
    "INSERT INTO events (workspace_id, source_id, message_id, type, name, user_id,"  # noqa: S608
    " anonymous_id, timestamp, original_timestamp, received_at, properties, context)"
    " SELECT w, $1::uuid, m, 'track', n, u, a, t, t, $2::timestamptz, p::jsonb, $3::jsonb"
    " FROM unnest($4::integer[], $5::varchar[], $6::varchar[], $7::varchar[], $8::varchar[],"
    f" $9::timestamptz[], $10::text[]) AS e(w, m, n, u, a, t, p) {_CONFLICT}"
)


def insert_events_sqlite(
    connection: sqlite3.Connection, encoded: list[tuple[Any, ...]]
) -> list[StoredEvent]:
    """Insert rows encoded by `encode_sqlite`, skipping known (workspace, messageId); the
    events inserted.

    Runs inside the caller's write transaction.
    """
    inserted: list[StoredEvent] = []
    for start in range(0, len(encoded), _SQLITE_ROWS_PER_STATEMENT):
        chunk = encoded[start : start + _SQLITE_ROWS_PER_STATEMENT]
        placeholders = ", ".join([f"({', '.join('?' * len(COLUMNS))})"] * len(chunk))
        sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES {placeholders} {_CONFLICT}"  # noqa: S608
        rows = connection.execute(sql, list(chain.from_iterable(chunk))).fetchall()
        inserted.extend(StoredEvent._make(row) for row in rows)
    return inserted


async def insert_events_postgres(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> list[StoredEvent]:
    """Insert rows (keys: COLUMNS) skipping known (workspace, messageId); those inserted.

    Runs in the session's transaction; the caller commits.
    """
    # Through SQLAlchemy's driver adapter, which opens the transaction (the bare asyncpg
    # connection would run the statement in autocommit), without per-value type processing.
    connection = await session.connection()
    result = await connection.exec_driver_sql(_POSTGRES_INSERT, tuple(_postgres_arrays(rows)))
    return [StoredEvent._make(record) for record in result]


@dataclass(frozen=True, slots=True)
class TrackColumns:
    """Track events from one source received at one instant, column by column (documents
    as JSON text): what `insert_tracks_postgres` binds."""

    source_id: uuid.UUID
    received_at: datetime
    context: str
    workspace_ids: list[int]
    message_ids: list[str]
    names: list[str]
    user_ids: list[str | None]
    anonymous_ids: list[str | None]
    timestamps: list[datetime]
    properties: list[str]


async def insert_tracks_postgres(session: AsyncSession, tracks: TrackColumns) -> list[StoredEvent]:
    """Insert the track events, skipping known (workspace, messageId); those inserted. As
    `insert_events_postgres`, binding only the columns that vary (7 arrays, not 18)."""
    connection = await session.connection()
    result = await connection.exec_driver_sql(
        _POSTGRES_INSERT_TRACKS,
        (
            tracks.source_id,
            tracks.received_at,
            tracks.context,
            tracks.workspace_ids,
            tracks.message_ids,
            tracks.names,
            tracks.user_ids,
            tracks.anonymous_ids,
            tracks.timestamps,
            tracks.properties,
        ),
    )
    return [StoredEvent._make(record) for record in result]


def encode_sqlite(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each row's values in COLUMNS order, as SQLAlchemy's SQLite types store them.

    Done before the write transaction, so the single SQLite writer only inserts.
    """

    time = sqlite_time
    return [
        (
            row["workspace_id"],
            row["source_id"].hex,
            row["message_id"],
            row["type"],
            row["name"],
            row["user_id"],
            row["anonymous_id"],
            row["group_id"],
            row["previous_id"],
            time(row["timestamp"]),
            time(row["original_timestamp"]),
            time(row["sent_at"]),
            time(row["received_at"]),
            row["properties"],
            row["traits"],
            row["context"],
            row["integrations"],
            row["extra"],
        )
        for row in rows
    ]


def _postgres_arrays(rows: list[dict[str, Any]]) -> list[list[Any]]:
    arrays: list[list[Any]] = []
    for name in COLUMNS:
        arrays.append([row[name] for row in rows])
    return arrays
