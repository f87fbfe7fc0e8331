"""Turning Segment messages into event rows, storing them once, and reading them back.

Timestamps follow Segment and RudderStack: `receivedAt` is the server's clock;
`originalTimestamp` is the client's (its `originalTimestamp`, else its `timestamp`); when the
client also says when it sent the message (`sentAt`, per message or per batch), the client's
clock skew is removed: `timestamp = receivedAt - (sentAt - originalTimestamp)`. Otherwise
`timestamp` is the client's time as given, or `receivedAt` when the client gave none.

An identify's traits are its `traits` over its `context.traits` (where RudderStack puts them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import FieldError, InvalidInput, NotFound
from clarion.core.pagination import decode_cursor, encode_cursor
from clarion.ingest.models import Event
from clarion.ingest.schemas import MESSAGE_MODELS, EventType, SegmentMessage, Timestamp
from clarion.ingest.store import append_events

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# Top-level fields the server owns or has already read; never kept as `extra`.
_SERVER_FIELDS = frozenset({"writeKey", "receivedAt"})
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp)


@dataclass(slots=True)
class Accepted:
    """Valid messages ready to store, and the batch positions refused with their reasons."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[FieldError] = field(default_factory=list)


def accept_messages(
    messages: Sequence[Any],
    *,
    workspace_id: int,
    source_id: uuid.UUID,
    received_at: datetime,
    sent_at: datetime | None = None,
    shared: dict[str, Any] | None = None,
    forced_type: EventType | None = None,
) -> Accepted:
    """Validate each message on its own and build rows for the valid ones.

    `shared` holds batch-level `context` and `integrations`, under each message's own.
    `forced_type` is the call type of a single-message endpoint (`/v1/track`...).
    """
    result = Accepted()
    for index, message in enumerate(messages):
        try:
            parsed = parse_message(message, forced_type=forced_type)
        except _Rejected as rejection:
            result.rejected.append(FieldError(rejection.field, rejection.message, index))
            continue
        result.rows.append(
            _row(
                parsed,
                workspace_id=workspace_id,
                source_id=source_id,
                received_at=received_at,
                batch_sent_at=sent_at,
                shared=shared or {},
            )
        )
    return result


class _Rejected(Exception):
    """A message refused, with the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_message(message: Any, *, forced_type: EventType | None = None) -> SegmentMessage:
    """The validated message; raises _Rejected naming the first field at fault."""
    if not isinstance(message, dict):
        raise _Rejected("", "a message must be a JSON object")
    encoded = orjson.dumps(message)
    if len(encoded) > MAX_MESSAGE_BYTES:
        raise _Rejected("", f"message larger than {MAX_MESSAGE_BYTES // 1024} KB")
    if b"\\u0000" in encoded:  # PostgreSQL stores no NUL in text or JSON
        raise _Rejected("", "message contains a NUL character (\\u0000)")
    kind = forced_type.value if forced_type else message.get("type")
    model = MESSAGE_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        allowed = ", ".join(MESSAGE_MODELS)
        raise _Rejected("type", f"unknown type {kind!r}; expected one of {allowed}")
    if forced_type is not None:
        message = {**message, "type": kind}
    try:
        parsed = model.model_validate(message)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _Rejected(".".join(str(part) for part in first["loc"]), first["msg"]) from exc
    if parsed.user_id is None and parsed.anonymous_id is None:
        raise _Rejected("userId", "userId or anonymousId is required")
    return parsed


def _row(
    message: SegmentMessage,
    *,
    workspace_id: int,
    source_id: uuid.UUID,
    received_at: datetime,
    batch_sent_at: datetime | None,
    shared: dict[str, Any],
) -> dict[str, Any]:
    original = message.original_timestamp or message.timestamp
    sent_at = message.sent_at or batch_sent_at
    if original is not None and sent_at is not None:
        timestamp = received_at - (sent_at - original)
    else:
        timestamp = original or received_at
    extra = {k: v for k, v in (message.model_extra or {}).items() if k not in _SERVER_FIELDS}
    values = message.__dict__
    return {
        "workspace_id": workspace_id,
        "source_id": source_id,
        "message_id": message.message_id or f"clarion-{uuid.uuid4()}",
        "type": values["type"],
        "name": values.get("event") or values.get("name"),
        "user_id": message.user_id,
        "anonymous_id": message.anonymous_id,
        "group_id": values.get("group_id"),
        "previous_id": values.get("previous_id"),
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent_at,
        "received_at": received_at,
        "properties": values.get("properties"),
        "traits": _identify_traits(message)
        if values["type"] == "identify"
        else values.get("traits"),
        "context": _layer(shared.get("context"), message.context),
        "integrations": _layer(shared.get("integrations"), message.integrations),
        "extra": extra or None,
    }


def _identify_traits(message: SegmentMessage) -> dict[str, Any] | None:
    """An identify's traits; RudderStack sends them as `context.traits`, Segment at the top."""
    own = message.__dict__.get("traits")
    in_context = (message.context or {}).get("traits")
    if not isinstance(in_context, dict) or not in_context:
        return own
    return {**in_context, **(own or {})}


def _layer(shared: Any, own: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(shared, dict) or not shared:
        return own
    return {**shared, **(own or {})}


def parse_sent_at(value: Any) -> datetime | None:
    """A batch's `sentAt`, or None when absent; InvalidInput naming `sentAt` when malformed."""
    if value is None:
        return None
    try:
        return _TIMESTAMP.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput(
            "`sentAt` is not a valid timestamp.",
            errors=[FieldError("sentAt", exc.errors(include_url=False)[0]["msg"])],
        ) from exc


async def store_events(
    session: AsyncSession, *, rows: list[dict[str, Any]]
) -> set[tuple[int, str]]:
    """Append the rows, skipping messageIds their workspace already has; (workspace, messageId)
    of each row stored.

    Every row holds the same keys (`_row` makes them), so this is one multi-row INSERT; of
    rows repeating a (workspace, messageId), the first is kept. The caller commits.
    """
    if not rows:
        return set()
    return await append_events(session, rows)


async def get_event_or_raise(session: AsyncSession, *, workspace_id: int, event_id: int) -> Event:
    """The workspace's event `event_id`; NotFound when it is absent or another's."""
    event = await session.scalar(
        select(Event).where(Event.workspace_id == workspace_id, Event.id == event_id)
    )
    if event is None:
        raise NotFound(f"No event {event_id} in this workspace.")
    return event


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What to read from the event log; every field narrows the result."""

    type: EventType | None = None
    name: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession,
    *,
    workspace_id: int,
    where: EventFilter,
    limit: int,
    cursor: str | None = None,
) -> tuple[Sequence[Event], str | None]:
    """A page of the workspace's events, newest first, and the cursor of the next page."""
    query: Select[Event] = select(Event).where(Event.workspace_id == workspace_id)
    for column, value in (
        (Event.type, where.type),
        (Event.name, where.name),
        (Event.user_id, where.user_id),
        (Event.anonymous_id, where.anonymous_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(Event.timestamp >= where.since)
    if where.until is not None:
        query = query.where(Event.timestamp < where.until)
    if cursor is not None:
        after_timestamp, after_id = _read_cursor(cursor)
        query = query.where(
            or_(
                Event.timestamp < after_timestamp,
                and_(Event.timestamp == after_timestamp, Event.id < after_id),
            )
        )
    query = query.order_by(Event.timestamp.desc(), Event.id.desc()).limit(limit + 1)
    events = (await session.scalars(query)).all()
    if len(events) <= limit:
        return events, None
    last = events[limit - 1]
    return events[:limit], encode_cursor(last.timestamp.isoformat(), last.id)


def _read_cursor(cursor: str) -> tuple[datetime, int]:
    timestamp, event_id = decode_cursor(cursor, arity=2)
    try:
        return _TIMESTAMP.validate_python(timestamp), int(event_id)
    except (ValidationError, TypeError, ValueError) as exc:
        raise InvalidInput(
            "The cursor is not one this API returned.",
            errors=[FieldError("cursor", "not a valid cursor")],
        ) from exc
