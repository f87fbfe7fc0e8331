"""Accepted events as the pipeline hands them on: plain, immutable values.

Downstream stages (tracking plans, profiles, segments, journeys) take `EventRecord`s, never
ORM rows, so enrichment can add properties without touching the append-only log.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from clarion.ingest.models import Event


class EventRecord(NamedTuple):
    """One accepted event. `properties` may carry fields added by enrichment (a named
    tuple: every processed event and every segment event is one, and a frozen dataclass
    of 15 fields costs about four times as much to make)."""

    id: int
    workspace_id: int
    source_id: uuid.UUID
    message_id: str
    type: str  # identify, track, page, screen, group or alias
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    timestamp: datetime
    received_at: datetime
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]

    @classmethod
    def from_row(cls, row: Event) -> EventRecord:
        """The record of a stored event."""
        return cls(
            id=row.id,
            workspace_id=row.workspace_id,
            source_id=row.source_id,
            message_id=row.message_id,
            type=row.type,
            name=row.name,
            user_id=row.user_id,
            anonymous_id=row.anonymous_id,
            group_id=row.group_id,
            previous_id=row.previous_id,
            timestamp=row.timestamp,
            received_at=row.received_at,
            properties=row.properties or {},
            traits=row.traits or {},
            context=row.context or {},
        )
