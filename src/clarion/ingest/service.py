"""Turning Segment messages into event rows, storing them once, and reading them back.

Timestamps follow Segment and RudderStack: `receivedAt` is the server's clock;
`originalTimestamp` is the client's (its `originalTimestamp`, else its `timestamp`); when the
client also says when it sent the message (`sentAt`, per message or per batch), the client's
clock skew is removed: `timestamp = receivedAt - (sentAt - originalTimestamp)`. Otherwise
`timestamp` is the client's time as given, or `receivedAt` when the client gave none.

An identify's traits are its `traits` over its `context.traits` (where RudderStack puts them).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import orjson
from sqlalchemy import CursorResult, Select, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.documents import FaultKind, json_fault
from clarion.core.errors import FieldError, NotFound
from clarion.core.pagination import decode_time_id_cursor, encode_cursor
from clarion.ingest.messages import (
    ABSENT,
    DECODERS,
    FIELDS,
    MAX_DEPTH,
    MAX_ID_LENGTH,
    TOP_LEVEL,
    AliasMessage,
    GroupMessage,
    IdentifyMessage,
    Rejected,
    SegmentMessage,
    malformed_rejection,
    object_text,
    rejection,
)
from clarion.ingest.models import Event
from clarion.ingest.plans.models import TrackingViolation
from clarion.ingest.schemas import EventType

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# Top-level fields the server owns or has already read; never kept as `extra`.
_SERVER_FIELDS = frozenset({"writeKey", "receivedAt"})
# Event ids per DELETE statement: within every SQLite build's limit on bound parameters.
_DELETE_CHUNK = 900
# A JSON \u0000 escape: its backslash is not itself escaped (an even run of them before it).
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# A message's shape in one C pass (~1 ns a byte): digits as "0", opening brackets as "{", the
# rest as " ". An integer past 64 bits needs a run of 19 digits, and a document nested past
# MAX_DEPTH levels as many opening brackets, plus the message's own.
_SHAPE = bytes(
    0x30 if 0x30 <= byte <= 0x39 else 0x7B if byte in b"{[" else 0x20 for byte in range(256)
)
_DIGIT_RUN = b"0" * 19
_NUL_ESCAPE = b"\\u0000"
# How `unstorable` words a document's fault (`core.documents.json_fault`); a lone surrogate
# and a number past a double's range are refused before it is asked.
_FAULTS = {
    FaultKind.BEYOND_64_BITS: "holds an integer beyond 64 bits (-2^63 to 2^63-1)",
    FaultKind.TOO_DEEP: f"nested more than {MAX_DEPTH} levels deep",
    FaultKind.NUL: "contains a NUL character (\\u0000)",
}
# Stored as strings, whatever their size.
_WIRE_IDS = frozenset({"userId", "anonymousId", "groupId", "previousId"})


@dataclass(slots=True)
class Accepted:
    """Valid messages ready to store, and the batch positions refused with their reasons."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[FieldError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Shared:
    """What a batch's envelope applies to all its messages."""

    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


def accept_messages(
    messages: Sequence[bytes | msgspec.Raw],
    *,
    workspace_id: int,
    source_id: uuid.UUID,
    received_at: datetime,
    shared: Shared | None = None,
    forced_type: EventType | None = None,
) -> Accepted:
    """Validate each raw JSON message on its own and build rows for the valid ones.

    `forced_type` is the call type of a single-message endpoint (`/v1/track`...).
    """
    result = Accepted()
    shared = shared or Shared()
    # Rows hold UTC times only (store.py relies on it).
    received_at = received_at.astimezone(UTC)
    if shared.sent_at is not None:
        shared = replace(shared, sent_at=shared.sent_at.astimezone(UTC))
    for index, raw in enumerate(messages):
        try:
            row = _row(parse_message(raw, forced_type=forced_type), shared, received_at)
        except Rejected as rejection:
            result.rejected.append(FieldError(rejection.field, rejection.message, index))
            continue
        row["workspace_id"] = workspace_id
        row["source_id"] = source_id
        result.rows.append(row)
    return result


@dataclass(frozen=True, slots=True)
class Parsed:
    """A validated message, its documents as JSON text, and its unknown top-level fields."""

    message: SegmentMessage
    documents: dict[str, str | None]
    extra: str | None


DOCUMENTS = ("context", "integrations", "properties", "traits")


def parse_message(raw: bytes | msgspec.Raw, *, forced_type: EventType | None = None) -> Parsed:
    """The validated message; raises Rejected naming the field at fault."""
    data = bytes(raw)
    if len(data) > MAX_MESSAGE_BYTES:
        raise Rejected("", f"message larger than {MAX_MESSAGE_BYTES // 1024} KB")
    if _NUL_ESCAPE in data and _NUL.search(data):  # PostgreSQL stores no NUL in text or JSON
        raise Rejected("", "message contains a NUL character (\\u0000)")
    try:
        fields = TOP_LEVEL.decode(data)
    except msgspec.ValidationError as exc:
        raise Rejected("", "a message must be a JSON object") from exc
    except msgspec.DecodeError as exc:
        raise malformed_rejection(data, exc) from exc
    except RecursionError as exc:
        raise Rejected("", "nested too deeply") from exc
    whole: Any = None
    try:
        # A number past a double's range: later readers (orjson) refuse what msgspec's raw
        # documents let through. Reading the message again costs ~1.5 us (a regex looking
        # for such numerals cost twice that).
        whole = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "number" not in exc.msg:  # msgspec lets bytes that are not UTF-8 through in Raw
            raise malformed_rejection(data, exc) from exc
        _refuse_infinite_numbers(fields)
    if may_be_unstorable(data, enclosing=1):  # the fields are inside the message
        _refuse_unstorable(fields)
    kind = _kind(fields.get("type"), forced_type)
    if kind == "identify" and isinstance(whole, dict):
        _refuse_long_trait_names(whole)
    try:
        message = DECODERS[kind].decode(data)
    except msgspec.MsgspecError as exc:
        raise rejection(exc) from exc
    except RecursionError as exc:
        raise Rejected("", "nested too deeply") from exc
    documents = {name: object_text(getattr(message, name, ABSENT), name) for name in DOCUMENTS}
    if _id(message.userId, "userId") is None and _id(message.anonymousId, "anonymousId") is None:
        raise Rejected("userId", "userId or anonymousId is required")
    unknown = [name for name in fields if name not in FIELDS[kind] and name not in _SERVER_FIELDS]
    extra = _object_text({name: fields[name] for name in unknown}) if unknown else None
    return Parsed(message, documents, extra)


def _refuse_infinite_numbers(fields: dict[str, msgspec.Raw]) -> None:
    """Rejected naming the top-level field orjson cannot read (a number past a double's
    range, read as infinity, which no JSON column keeps)."""
    for name, value in fields.items():
        try:
            orjson.loads(bytes(value))
        except orjson.JSONDecodeError as exc:
            raise Rejected(name, "holds a number beyond a double's range (about 1.8e308)") from exc


def _refuse_unstorable(fields: dict[str, msgspec.Raw]) -> None:
    """Rejected naming the top-level field that `unstorable` finds fault with."""
    for name, value in fields.items():
        if name not in _WIRE_IDS and (reason := unstorable(value)):
            raise Rejected(name, reason)


def may_be_unstorable(document: bytes | msgspec.Raw, *, enclosing: int = 0) -> bool:
    """Whether `unstorable` could find fault with the JSON text, or with a value inside it
    `enclosing` levels down (one C pass, ~1 ns a byte): an integer past 64 bits needs a
    run of 19 digits, nesting past `MAX_DEPTH` as many opening brackets, a NUL its escape."""
    data = bytes(document)
    shape = data.translate(_SHAPE)
    return (
        _DIGIT_RUN in shape
        or shape.count(b"{") > MAX_DEPTH + enclosing
        or (_NUL_ESCAPE in data and _NUL.search(data) is not None)
    )


def unstorable(document: bytes | msgspec.Raw) -> str | None:
    """Why a finite JSON value could not be kept as sent (`core.documents.json_fault`): an
    integer past 64 bits (orjson reads it back as a rounded float; the admin API and profile
    import refuse it), nesting deeper than `MAX_DEPTH` levels (profile import refuses it),
    a NUL (PostgreSQL stores none). None when it can."""
    try:
        value = msgspec.json.decode(document)  # integers of any size, read exactly
    except RecursionError:  # deeper than this stack allows: far past MAX_DEPTH
        return _FAULTS[FaultKind.TOO_DEEP]
    fault = json_fault(value)
    if fault is None:
        return None
    return _FAULTS.get(fault.kind, f"holds {fault.kind.value}")


def _refuse_long_trait_names(message: dict[str, Any]) -> None:
    """Rejected naming the traits holding a name longer than a profile's trait history
    keeps (`MAX_ID_LENGTH`)."""
    context = message.get("context")
    for where, traits in (
        ("traits", message.get("traits")),
        ("context.traits", context.get("traits") if isinstance(context, dict) else None),
    ):
        if isinstance(traits, dict) and any(len(name) > MAX_ID_LENGTH for name in traits):
            raise Rejected(where, f"a trait name is longer than {MAX_ID_LENGTH} characters")


def _kind(declared: msgspec.Raw | None, forced: EventType | None) -> str:
    kind = msgspec.json.decode(declared) if declared else None
    if forced is not None:
        if kind is not None and kind != forced.value:
            raise Rejected("type", f"must be {forced.value!r} on /v1/{forced.value}")
        return forced.value
    if not isinstance(kind, str) or kind not in DECODERS:
        allowed = ", ".join(DECODERS)
        raise Rejected("type", f"unknown type {kind!r}; expected one of {allowed}")
    return kind


def _id(value: str | int | None, field: str) -> str | None:
    """A wire id as stored: numbers as strings, an empty string as absent; Rejected when it
    is blank (a client's bug: profile import would not find it back, as it strips ids)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isspace():
        raise Rejected(field, "is blank (only whitespace)")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise Rejected(field, f"longer than {MAX_ID_LENGTH} characters")
    return text


def _required_id(value: str | int, field: str) -> str:
    text = _id(value, field)
    if text is None:
        raise Rejected(field, f"{field} is required")
    return text


def as_utc(value: datetime | None) -> datetime | None:
    """Times without an offset are taken as UTC, as Segment does."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Event times Clarion keeps: segments and journeys add days and years to them, so the ends
# of the calendar (years 1 and 9999) would overflow there.
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def event_time(value: datetime | None, field: str) -> datetime | None:
    """`as_utc(value)`; Rejected naming `field` outside the years 1000 to 8999."""
    try:
        moment = as_utc(value)
    except OverflowError:
        moment = EARLIEST  # an offset moved it off the calendar
    if moment is not None and not EARLIEST < moment < LATEST:
        raise Rejected(field, "must be within the years 1000 to 8999")
    return moment


def _row(parsed: Parsed, shared: Shared, received_at: datetime) -> dict[str, Any]:
    message, documents = parsed.message, parsed.documents
    original = event_time(message.originalTimestamp, "originalTimestamp") or event_time(
        message.timestamp, "timestamp"
    )
    sent_at = event_time(message.sentAt, "sentAt") or shared.sent_at
    if original is not None and sent_at is not None:
        timestamp = event_time(received_at - (sent_at - original), "sentAt")
        assert timestamp is not None
    else:
        timestamp = original or received_at
    kind = message.__struct_config__.tag
    return {
        "message_id": message.messageId or f"clarion-{uuid.uuid4()}",
        "type": kind,
        "name": getattr(message, "event", None) or getattr(message, "name", None),
        "user_id": _id(message.userId, "userId"),
        "anonymous_id": _id(message.anonymousId, "anonymousId"),
        "group_id": _required_id(message.groupId, "groupId")
        if isinstance(message, GroupMessage)
        else None,
        "previous_id": _required_id(message.previousId, "previousId")
        if isinstance(message, AliasMessage)
        else None,
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent_at,
        "received_at": received_at,
        "properties": documents["properties"],
        "traits": _traits(message, documents),
        "context": _layer(shared.context, documents["context"]),
        "integrations": _layer(shared.integrations, documents["integrations"]),
        "extra": parsed.extra,
    }


def _traits(message: SegmentMessage, documents: dict[str, str | None]) -> str | None:
    """The traits as JSON text; an identify's are its `traits` over its `context.traits`
    (where RudderStack puts them)."""
    own, context = documents["traits"], documents["context"]
    if not isinstance(message, IdentifyMessage) or not context or '"traits"' not in context:
        return own
    in_context = orjson.loads(context).get("traits")
    if not isinstance(in_context, dict) or not in_context:
        return own
    return orjson.dumps({**in_context, **(orjson.loads(own) if own else {})}).decode()


def _layer(shared: dict[str, Any] | None, own: str | None) -> str | None:
    """The message's document, over the batch's shared one when there is one."""
    if not shared:
        return own
    return orjson.dumps({**shared, **(orjson.loads(own) if own else {})}).decode()


def _object_text(fields: dict[str, msgspec.Raw]) -> str:
    members = (
        f"{orjson.dumps(name).decode()}:{bytes(value).decode()}" for name, value in fields.items()
    )
    return "{" + ",".join(members) + "}"


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
        after_timestamp, after_id = decode_time_id_cursor(cursor)
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


async def delete_events(
    session: AsyncSession, *, workspace_id: int, event_ids: Collection[int]
) -> int:
    """Delete the workspace's events among `event_ids`, with the tracking plan violations
    recorded about them (their errors may quote the payload); how many events went.

    The log is append-only but for this: a person's erasure. Flushes, never commits."""
    ordered = sorted(set(event_ids))
    removed = 0
    for start in range(0, len(ordered), _DELETE_CHUNK):
        chunk = ordered[start : start + _DELETE_CHUNK]
        await session.execute(
            delete(TrackingViolation).where(
                TrackingViolation.workspace_id == workspace_id,
                TrackingViolation.event_id.in_(chunk),
            )
        )
        result = await session.execute(
            delete(Event).where(Event.workspace_id == workspace_id, Event.id.in_(chunk))
        )
        removed += cast(CursorResult[Any], result).rowcount
    return removed
