"""Dotted paths: into an event (enrichment variables) and into a response (mappings).

Event paths start at a document (`properties.sku`, `traits.plan`, `context.ip`, followed by
at least one key) or name a top-level field (`user_id`, `anonymous_id`, `group_id`,
`previous_id`, `message_id`, `name`, `type`). Response paths are dot-separated keys; an
all-digit segment also indexes a list (`items.0.price`).
"""

from __future__ import annotations

from typing import Any

from clarion.ingest.records import EventRecord

EVENT_DOCUMENTS = ("properties", "traits", "context")
EVENT_FIELDS = ("user_id", "anonymous_id", "group_id", "previous_id", "message_id", "name", "type")
MAX_SEGMENTS = 16


class Missing:
    """The value at a path that leads nowhere."""


MISSING = Missing()


def event_path_problem(path: str) -> str | None:
    """Why `path` cannot exist in any event, or None when it can."""
    segments = path.split(".")
    if any(not segment for segment in segments) or len(segments) > MAX_SEGMENTS:
        return f"{path!r} is not a dotted path"
    root = segments[0]
    if root in EVENT_DOCUMENTS:
        return None if len(segments) > 1 else f"{path!r} names a whole document; add a key"
    if root in EVENT_FIELDS:
        return None if len(segments) == 1 else f"{root!r} has no fields"
    roots = ", ".join((*EVENT_DOCUMENTS, *EVENT_FIELDS))
    return f"{path!r} does not start with one of {roots}"


def response_path_problem(path: str) -> str | None:
    """Why `path` is not a valid response path, or None."""
    segments = path.split(".")
    if any(not segment or segment != segment.strip() for segment in segments):
        return f"{path!r} is not a dotted path"
    if len(segments) > MAX_SEGMENTS:
        return f"{path!r} is deeper than {MAX_SEGMENTS} levels"
    return None


def event_value(event: EventRecord, path: str) -> Any:
    """The value at an event path (already checked), or MISSING."""
    root, *rest = path.split(".")
    if root in EVENT_FIELDS:
        value = getattr(event, root)
        return MISSING if value is None else value
    return document_value(getattr(event, root), rest)


def document_value(document: Any, segments: list[str]) -> Any:
    """The value under `segments` in a JSON document, or MISSING; null counts as missing."""
    value = document
    for segment in segments:
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return MISSING
    return MISSING if value is None else value
