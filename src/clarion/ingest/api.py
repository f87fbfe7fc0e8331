"""Routes: the Segment Tracking API (`/v1/*`) and reading the event log (`/api/v1/events`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson
from fastapi import APIRouter, Query, Request, Response

from clarion.core.deps import ReadSession, RowId, get_clock, get_database
from clarion.core.errors import FieldError, InvalidInput, Unauthorized
from clarion.core.routing import StrictJSONRoute
from clarion.core.schemas import Instant
from clarion.ingest import service
from clarion.ingest.messages import (
    MESSAGE_TYPES,
    TOP_LEVEL,
    Batch,
    Rejected,
    dotted,
    malformed,
    openapi_components,
)
from clarion.ingest.schemas import EventPage, EventRead, EventType, IngestResult
from clarion.ingest.wire import basic_auth_user, body_write_key, read_body
from clarion.ingest.writer import EventWriter
from clarion.workspaces import service as workspaces
from clarion.workspaces.auth import ManagementCaller, write_key_cache
from clarion.workspaces.schemas import KeyScope

tracking = APIRouter(prefix="/v1", tags=["tracking"], route_class=StrictJSONRoute)
events = APIRouter(prefix="/api/v1/events", tags=["events"], route_class=StrictJSONRoute)

WRITE_SCOPE = frozenset({KeyScope.WRITE})
_SCHEMA_REF = "#/components/schemas/{name}"


def openapi_schemas() -> dict[str, Any]:
    """JSON Schemas of the tracking bodies, for the OpenAPI document's components."""
    return openapi_components(_SCHEMA_REF)


def _documented(model: type) -> dict[str, Any]:
    ref = {"$ref": _SCHEMA_REF.format(name=model.__name__)}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref}},
            "description": "JSON, optionally gzip-compressed (`Content-Encoding: gzip`).",
        },
        "security": [{"writeKey": []}],
    }


async def _accept(request: Request, *, forced_type: EventType | None) -> Response:
    """Authenticate, validate, store what is valid (group commit), then acknowledge."""
    limit = service.MAX_MESSAGE_BYTES if forced_type else service.MAX_BATCH_BYTES
    secret = basic_auth_user(request)
    if secret is not None:  # refuse a bad key before reading the body
        workspace_id, source_id = await _source_key(request, secret)
    body = await read_body(request, limit=limit)
    # The envelope is read for a batch, or for a write key in the body; a single call's body
    # is otherwise decoded once, as its message.
    fields = _top_level(body) if forced_type is None or secret is None else {}
    if secret is None:
        workspace_id, source_id = await _source_key(request, body_write_key(fields))
    if forced_type is None:
        messages, shared = _unpack_batch(fields), _shared(fields)
    else:
        messages, shared = [msgspec.Raw(body)], None
    accepted = service.accept_messages(
        messages,
        workspace_id=workspace_id,
        source_id=source_id,
        received_at=get_clock(request).now(),
        shared=shared,
        forced_type=forced_type,
    )
    if not accepted.rows:
        first = accepted.rejected[0]
        if forced_type is not None:
            errors = [FieldError(first.field or "body", first.message)]
            raise InvalidInput(f"Invalid {forced_type.value} call: {first.message}.", errors=errors)
        raise InvalidInput("No message in the batch is valid.", errors=accepted.rejected)
    writer: EventWriter = request.app.state.event_writer
    stored = await writer.store(accepted.rows)
    result = {
        "success": True,
        "accepted": stored,
        "duplicates": len(accepted.rows) - stored,
        "rejected": [
            {"index": error.index, "field": error.field, "message": error.message}
            for error in accepted.rejected
        ],
    }
    return Response(orjson.dumps(result), media_type="application/json")


async def _source_key(request: Request, secret: str) -> tuple[int, uuid.UUID]:
    """The workspace and source a write key sends for; Unauthorized (Basic) otherwise."""
    cache = write_key_cache(request)
    known = cache.get(secret)
    if known is not None:
        return known
    async with get_database(request).read_session() as session:
        try:
            key = await workspaces.authenticate(session, secret=secret, scopes=WRITE_SCOPE)
        except Unauthorized as exc:
            raise Unauthorized(exc.detail, scheme="Basic") from None
    if key.source_id is None:  # write keys are created with a source; guard the invariant
        raise Unauthorized("This write key has no source.", scheme="Basic")
    cache.put(secret, workspace_id=key.workspace_id, source_id=key.source_id)
    return key.workspace_id, key.source_id


def _top_level(body: bytes) -> dict[str, msgspec.Raw]:
    """The body's top-level members, their values still raw JSON."""
    try:
        return TOP_LEVEL.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            "The body must be a JSON object.", errors=[FieldError("body", "not a JSON object")]
        ) from exc
    except msgspec.DecodeError as exc:
        reason, path = malformed(body, exc)
        # The member of the body, or of a batch's message, that holds the fault.
        field = dotted(path[:3] if path[:1] == ["batch"] else path[:1]) or "body"
        raise InvalidInput(
            f"The body is not valid JSON: {reason}.", errors=[FieldError(field, reason)]
        ) from exc
    except RecursionError as exc:
        raise InvalidInput(
            "The body is nested too deeply.", errors=[FieldError("body", "nested too deeply")]
        ) from exc


def _unpack_batch(fields: dict[str, msgspec.Raw]) -> list[msgspec.Raw]:
    raw = fields.get("batch")
    try:
        batch = _RAW_LIST.decode(raw) if raw else []
    except msgspec.ValidationError:
        batch = []
    if not batch:
        raise InvalidInput(
            "`batch` must be a non-empty array of messages.",
            errors=[FieldError("batch", "must be a non-empty array")],
        )
    return batch


def _shared(fields: dict[str, msgspec.Raw]) -> service.Shared:
    """The batch envelope's `sentAt`, `context` and `integrations`."""
    try:
        sent_at = _SENT_AT.decode(fields["sentAt"]) if "sentAt" in fields else None
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            "`sentAt` is not a valid timestamp.", errors=[FieldError("sentAt", str(exc))]
        ) from exc
    documents: dict[str, dict[str, Any] | None] = {}
    for name in ("context", "integrations"):
        try:
            documents[name] = _OBJECT.decode(fields[name]) if name in fields else None
        except msgspec.ValidationError as exc:
            # msgspec refuses a number past a double's range as a validation error too.
            wrong = (
                "holds a number beyond a double's range (about 1.8e308)"
                if str(exc).startswith("Number out of range")
                else "must be an object"
            )
            raise InvalidInput(f"`{name}` {wrong}.", errors=[FieldError(name, wrong)]) from exc
        # Layered over each message's own (as JSON text again): refused as a message's are.
        raw = fields.get(name)
        reason = service.unstorable(raw) if raw and service.may_be_unstorable(raw) else None
        if reason:
            raise InvalidInput(f"`{name}` {reason}.", errors=[FieldError(name, reason)])
    try:
        sent_at = service.event_time(sent_at, "sentAt")
    except Rejected as exc:
        raise InvalidInput(
            f"`sentAt` {exc.message}.", errors=[FieldError("sentAt", exc.message)]
        ) from exc
    return service.Shared(
        sent_at=sent_at,
        context=documents["context"],
        integrations=documents["integrations"],
    )


_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_SENT_AT = msgspec.json.Decoder(datetime | None)
_OBJECT = msgspec.json.Decoder(dict[str, Any] | None)


def _single(kind: EventType) -> Any:
    async def endpoint(request: Request) -> Response:
        return await _accept(request, forced_type=kind)

    endpoint.__name__ = f"{kind.value}_call"
    endpoint.__doc__ = f"Record one `{kind.value}` call (Segment spec). At most 32 KB."
    return endpoint


for _kind in EventType:
    tracking.add_api_route(
        f"/{_kind.value}",
        _single(_kind),
        methods=["POST"],
        response_model=IngestResult,
        openapi_extra=_documented(MESSAGE_TYPES[_kind]),
        summary=f"{_kind.value.capitalize()} call",
    )


@tracking.post("/batch", response_model=IngestResult, openapi_extra=_documented(Batch))
async def batch_call(request: Request) -> Response:
    """Record many calls at once (at most 500 KB); each invalid message is reported by index."""
    return await _accept(request, forced_type=None)


@events.get("", response_model=EventPage)
async def list_events(
    caller: ManagementCaller,
    session: ReadSession,
    type: EventType | None = None,
    name: Annotated[str | None, Query(max_length=255)] = None,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    anonymous_id: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[Instant | None, Query(description="Events at or after this time.")] = None,
    until: Annotated[Instant | None, Query(description="Events before this time.")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """The workspace's events, newest first, filtered and cursor-paged."""
    where = service.EventFilter(
        type=type,
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        since=since,
        until=until,
    )
    items, next_cursor = await service.list_events(
        session, workspace_id=caller.workspace_id, where=where, limit=limit, cursor=cursor
    )
    return EventPage(items=[EventRead.model_validate(e) for e in items], next_cursor=next_cursor)


@events.get("/{event_id}", response_model=EventRead)
async def read_event(event_id: RowId, caller: ManagementCaller, session: ReadSession) -> EventRead:
    """One event of the workspace."""
    event = await service.get_event_or_raise(
        session, workspace_id=caller.workspace_id, event_id=event_id
    )
    return EventRead.model_validate(event)
