"""Events Clarion emits itself (`Segment Entered`, later delivery feedback), appended to the
event log in the caller's transaction with their processing jobs, so they flow on to
profiles, segments and journeys like events sent by a library, with one difference: they
are on the profile's timeline but are not the customer's activity, so they move neither its
first / last seen times nor its computed traits (`is_activity`).

They carry `INTERNAL_SOURCE` as source and `context.library.name = "clarion"`; their
messageIds are derived from what caused them, so a retried transaction stores nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.jobs.queue import enqueue
from clarion.ingest.jobs import StoredEvent, processing_jobs
from clarion.ingest.models import Event
from clarion.ingest.records import EventRecord
from clarion.ingest.store import TrackColumns, insert_tracks_postgres

INTERNAL_SOURCE = uuid.UUID(int=0)
LIBRARY = {"library": {"name": "clarion"}}
_LIBRARY_JSON = orjson.dumps(LIBRARY).decode()
# SQLite appends through the table, not the ORM entity: a Core executemany skips the ORM's
# bulk path (about 9 us a row).
_EVENTS = cast(Table, Event.__table__)


def is_activity(source_id: uuid.UUID) -> bool:
    """Whether events of this source are something the customer did (not Clarion's own)."""
    # Identity first: records of Clarion's own events carry the constant itself, and
    # comparing UUIDs runs Python code.
    return source_id is not INTERNAL_SOURCE and source_id != INTERNAL_SOURCE


class InternalEvent(NamedTuple):
    """A track event about a profile, sent as its user id or else its anonymous id (a named
    tuple: a first touch makes one for each of its thousands of segment entries)."""

    workspace_id: int
    message_id: str
    name: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    properties: dict[str, Any]


async def emit_events(
    session: AsyncSession, events: list[InternalEvent], *, now: datetime
) -> list[StoredEvent]:
    """Append the events (those whose messageId is new) and enqueue their processing; the
    events stored. Events with neither id cannot be resolved to a profile and are skipped."""
    stored = await _append(session, events, now=now)
    await enqueue(session, processing_jobs(stored), now=now)
    return stored


OwnEvents = dict[uuid.UUID, list[EventRecord]]
"""Clarion's own events stored without processing jobs (`append_events`), by the canonical
profile they are about: for the caller to apply in its transaction."""


async def append_events(
    session: AsyncSession, events: list[InternalEvent], *, now: datetime
) -> list[EventRecord]:
    """Append the events as `emit_events` does but enqueue no processing: the caller
    applies them in its own transaction (or hands them to `process_later`). The events
    stored (a messageId already in the log is not), as records."""
    stored = await _append(session, events, now=now)
    sent = {(event.workspace_id, event.message_id): event for event in events}
    records = []
    for row in stored:
        event = sent[(row.workspace_id, row.message_id)]
        records.append(
            EventRecord(
                id=row.id,
                workspace_id=row.workspace_id,
                source_id=INTERNAL_SOURCE,
                message_id=row.message_id,
                type="track",
                name=event.name,
                user_id=row.user_id,
                anonymous_id=row.anonymous_id,
                group_id=None,
                previous_id=None,
                timestamp=event.timestamp,
                received_at=now,
                properties=event.properties,
                traits={},
                context=LIBRARY,
            )
        )
    return records


async def process_later(
    session: AsyncSession, records: Iterable[EventRecord], *, now: datetime
) -> None:
    """Enqueue the processing of appended events, as `emit_events` would have."""
    stored = [
        StoredEvent(r.id, r.workspace_id, r.message_id, r.user_id, r.anonymous_id) for r in records
    ]
    await enqueue(session, processing_jobs(stored), now=now)


async def _append(
    session: AsyncSession, events: list[InternalEvent], *, now: datetime
) -> list[StoredEvent]:
    kept = [event for event in events if event.user_id or event.anonymous_id]
    if not kept:
        return []
    if session.get_bind().dialect.name == "postgresql":
        # The event log's own bulk append: one statement of arrays, documents as JSON text.
        return await insert_tracks_postgres(
            session,
            TrackColumns(
                source_id=INTERNAL_SOURCE,
                received_at=now,
                context=_LIBRARY_JSON,
                workspace_ids=[event.workspace_id for event in kept],
                message_ids=[event.message_id for event in kept],
                names=[event.name for event in kept],
                user_ids=[event.user_id for event in kept],
                anonymous_ids=[event.anonymous_id for event in kept],
                timestamps=[event.timestamp for event in kept],
                properties=[orjson.dumps(event.properties).decode() for event in kept],
            ),
        )
    result = await session.execute(
        sqlite_insert(_EVENTS)
        .on_conflict_do_nothing(index_elements=["workspace_id", "message_id"])
        .returning(
            _EVENTS.c.id,
            _EVENTS.c.workspace_id,
            _EVENTS.c.message_id,
            _EVENTS.c.user_id,
            _EVENTS.c.anonymous_id,
        ),
        [
            {
                "workspace_id": event.workspace_id,
                "source_id": INTERNAL_SOURCE,
                "message_id": event.message_id,
                "type": "track",
                "name": event.name,
                "user_id": event.user_id,
                "anonymous_id": event.anonymous_id,
                "timestamp": event.timestamp,
                "original_timestamp": event.timestamp,
                "received_at": now,
                "properties": event.properties,
                "context": LIBRARY,
            }
            for event in kept
        ],
    )
    return [StoredEvent._make(row) for row in result]
