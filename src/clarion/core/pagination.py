"""Opaque, tamper-evident cursors for keyset paging."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from clarion.core.errors import FieldError, InvalidInput


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding the sort key of the last item of a page."""
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str, *, arity: int) -> list[Any]:
    """The sort key inside `cursor`; InvalidInput naming `cursor` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(values, list) or len(values) != arity:
        raise _bad_cursor()
    return values


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "The cursor is not one this API returned.",
        errors=[FieldError("cursor", "not a valid cursor")],
    )
