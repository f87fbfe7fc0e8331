"""The Segment message wire format, decoded and validated in one pass (msgspec).

Nested documents (`properties`, `traits`, `context`, `integrations`) stay raw JSON: they are
checked to be objects and stored as sent, never parsed and re-encoded on the hot path. These
Structs are also the OpenAPI description of the tracking API (`openapi_components`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from clarion.core.documents import MAX_JSON_DEPTH

MAX_ID_LENGTH = 255
# Levels a document (`properties`, `traits`, `context`...) may nest, itself the first: what
# every JSON column keeps, profile import included, so an export imports.
MAX_DEPTH = MAX_JSON_DEPTH

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
WireId = str | int  # SDKs send numeric ids too; stored as strings
# Raw JSON, kept as sent; empty when absent (msgspec cannot put Raw in a union with None).
Document = Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema={"type": "object"})]
ABSENT = msgspec.Raw()


class SegmentMessage(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True):
    """Fields every Segment call shares; `userId` or `anonymousId` is required."""

    messageId: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | None = None
    userId: WireId | None = None
    anonymousId: WireId | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: Document = msgspec.field(default_factory=msgspec.Raw)
    integrations: Document = msgspec.field(default_factory=msgspec.Raw)


class IdentifyMessage(SegmentMessage, tag="identify"):
    """Who the user is: traits to set on their profile."""

    traits: Document = msgspec.field(default_factory=msgspec.Raw)


class TrackMessage(SegmentMessage, tag="track"):
    """Something the user did."""

    event: Name
    properties: Document = msgspec.field(default_factory=msgspec.Raw)


class PageMessage(SegmentMessage, tag="page"):
    """A web page the user viewed."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | None = None
    properties: Document = msgspec.field(default_factory=msgspec.Raw)


class ScreenMessage(SegmentMessage, tag="screen"):
    """An app screen the user viewed."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | None = None
    properties: Document = msgspec.field(default_factory=msgspec.Raw)


class GroupMessage(SegmentMessage, tag="group"):
    """The user belongs to an account (a company, a household)."""

    groupId: WireId
    traits: Document = msgspec.field(default_factory=msgspec.Raw)


class AliasMessage(SegmentMessage, tag="alias"):
    """`previousId` and `userId` are the same person."""

    previousId: WireId


Message = IdentifyMessage | TrackMessage | PageMessage | ScreenMessage | GroupMessage | AliasMessage
MESSAGE_TYPES: dict[str, type[SegmentMessage]] = {
    "identify": IdentifyMessage,
    "track": TrackMessage,
    "page": PageMessage,
    "screen": ScreenMessage,
    "group": GroupMessage,
    "alias": AliasMessage,
}
DECODERS = {kind: msgspec.json.Decoder(model) for kind, model in MESSAGE_TYPES.items()}
FIELDS = {
    kind: frozenset(model.__struct_fields__) | {"type"} for kind, model in MESSAGE_TYPES.items()
}
TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


class Batch(msgspec.Struct, kw_only=True):
    """`POST /v1/batch`: messages of any type; top-level context and integrations apply to all."""

    batch: list[Message]
    sentAt: datetime | None = None
    context: Document = msgspec.field(default_factory=msgspec.Raw)
    integrations: Document = msgspec.field(default_factory=msgspec.Raw)
    writeKey: str | None = None


class Rejected(Exception):
    """A message refused: the field at fault (Segment's name; "" for the whole message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_PATH = re.compile(r"at `\$\.(\w+)")
_REQUIRED = re.compile(r"required field `(\w+)`")


def rejection(error: msgspec.MsgspecError) -> Rejected:
    """The Rejected for a msgspec error, naming the top-level field it is about."""
    text = str(error)
    required = _REQUIRED.search(text)
    if required:
        return Rejected(required.group(1), f"{required.group(1)} is required")
    path = _PATH.search(text)
    reason = text.split(" - at ", 1)[0]
    if not isinstance(error, msgspec.ValidationError):  # a DecodeError: see `malformed`
        return Rejected("", f"malformed JSON: {reason}")
    return Rejected(path.group(1) if path else "", reason)


def malformed(data: bytes, error: Exception) -> tuple[str, list[str | int]]:
    """What is wrong with JSON text a reader refused (`error`), and where: a message naming
    the line and column, and the path to the member holding a lone surrogate (empty when not
    told).

    For the error path only: msgspec calls a lone surrogate "Input data was truncated", so
    the text is read again by stricter readers that say more."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line, column = _line_column(data[: exc.start].decode())
        return f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} column {column}", []
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        where = f"at line {exc.lineno} column {exc.colno}"
        if "surrogate" not in exc.msg:
            return f"malformed JSON: {exc.msg} {where}", []
        escape = _SURROGATE.match(exc.doc, exc.pos)
        lone = escape.group() if escape else "a UTF-16 escape"
        return f"not valid JSON text: a lone surrogate ({lone}) {where}", _surrogate_path(text)
    return f"malformed JSON: {str(error).split(' - at ', 1)[0]}", []


def malformed_rejection(data: bytes, error: Exception) -> Rejected:
    """The Rejected for a message msgspec refused as JSON (see `malformed`), naming the
    top-level field holding a lone surrogate."""
    reason, path = malformed(data, error)
    if len(path) > 1:
        reason += f" (in {dotted(path)})"
    return Rejected(str(path[0]) if path else "", reason)


def dotted(path: list[str | int]) -> str:
    """A path into a JSON document as a field name: `batch.3.properties.x`."""
    return ".".join(map(str, path))


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _line_column(before: str) -> tuple[int, int]:
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def _surrogate_path(text: str) -> list[str | int]:
    """The path to the first string (a member's name or a value) holding a lone surrogate,
    read by Python's reader, which takes them; empty when it cannot read the text."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return []
    pending: list[tuple[Any, list[str | int]]] = [(document, [])]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str) and _lone_surrogate(value):
            return path
        if isinstance(value, dict):
            for name, item in reversed(value.items()):  # a name is looked at before its value
                pending += (item, [*path, name]), (name, [*path, name])
        elif isinstance(value, list):
            pending.extend((item, [*path, index]) for index, item in reversed([*enumerate(value)]))
    return []


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def object_text(document: msgspec.Raw, field: str) -> str | None:
    """A raw document as JSON text; None when absent or `null`; Rejected unless an object."""
    data = bytes(document)
    if not data or data == b"null":
        return None
    if data[0] != 0x7B:  # "{"
        raise Rejected(field, "must be an object")
    return data.decode()


def openapi_components(ref_template: str) -> dict[str, Any]:
    """JSON Schemas of the tracking bodies, for the OpenAPI document's components."""
    _, components = msgspec.json.schema_components(
        [Batch, *MESSAGE_TYPES.values()], ref_template=ref_template
    )
    return components
