"""The Segment message wire format, decoded and validated in one pass (msgspec).

Nested documents (`properties`, `traits`, `context`, `integrations`) stay raw JSON: they are
checked to be objects and stored as sent, never parsed and re-encoded on the hot path. These
Structs are also the OpenAPI description of the tracking API (`openapi_components`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

MAX_ID_LENGTH = 255

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
    if not isinstance(error, msgspec.ValidationError):  # a DecodeError: not JSON at all
        return Rejected("", f"malformed JSON: {reason}")
    return Rejected(path.group(1) if path else "", reason)


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
