"""What a JSON column keeps as it is given, on both databases: the check profile import's
`json` cells and journeys' trait values share.

A kept document is null, booleans, whole numbers within 64 bits, finite floats, text
without NUL (PostgreSQL's JSON cannot hold it) or lone surrogates (no UTF-8 spells them),
lists, and objects with text keys, nested at most `MAX_JSON_DEPTH` levels (the document
itself is level 1). `json_fault` names the first thing in a document that is none of these;
each caller words it for its own users:

    if (fault := json_fault(value)) is not None:
        raise CellError(MESSAGES[fault.kind])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

# Well within what orjson writes (254 levels, counting the traits and history around a value).
MAX_JSON_DEPTH = 128
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what both databases' JSON keeps whole


class FaultKind(Enum):
    """Why a value is no JSON both databases keep as it is."""

    BEYOND_64_BITS = "a whole number beyond 64 bits"
    NOT_FINITE = "a float that is infinite or NaN"
    NUL = "text holding a NUL character"
    NOT_UNICODE = "text holding a lone surrogate"
    TOO_DEEP = f"lists or objects nested more than {MAX_JSON_DEPTH} levels deep"
    KEY_NOT_TEXT = "an object key that is not text"
    NOT_JSON = "a value of a type JSON has not"


@dataclass(frozen=True, slots=True)
class JsonFault:
    """What is wrong (`kind`) and the part of the document at fault (`part`: the number,
    the text, the too-deep list or object, the object with the key, the foreign value)."""

    kind: FaultKind
    part: Any


def json_fault(document: Any) -> JsonFault | None:
    """The first fault in `document` in the order its JSON text reads (an object's keys are
    checked as the object is reached, before its members), None when both databases keep it
    as it is. Never recurses: a document nested 100,000 levels deep is answered too."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        part, depth = pending.pop()
        if part is None or isinstance(part, bool):
            continue
        if isinstance(part, int):
            if not INT64_MIN <= part <= INT64_MAX:
                return JsonFault(FaultKind.BEYOND_64_BITS, part)
        elif isinstance(part, float):
            if not math.isfinite(part):
                return JsonFault(FaultKind.NOT_FINITE, part)
        elif isinstance(part, str):
            if "\x00" in part:
                return JsonFault(FaultKind.NUL, part)
            try:
                part.encode()
            except UnicodeEncodeError:
                return JsonFault(FaultKind.NOT_UNICODE, part)
        elif isinstance(part, list | dict):
            if depth > MAX_JSON_DEPTH:
                return JsonFault(FaultKind.TOO_DEEP, part)
            # Pushed in reverse, so that the first part in the text is popped first.
            if isinstance(part, list):
                pending.extend((item, depth + 1) for item in reversed(part))
                continue
            if any(not isinstance(key, str) for key in part):
                return JsonFault(FaultKind.KEY_NOT_TEXT, part)
            for key, item in reversed(part.items()):
                pending += ((item, depth + 1), (key, depth + 1))
        else:
            return JsonFault(FaultKind.NOT_JSON, part)
    return None
