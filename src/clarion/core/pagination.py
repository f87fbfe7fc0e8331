"""Opaque, tamper-evident cursors for keyset paging."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from clarion.core.database import MAX_ROW_ID
from clarion.core.errors import FieldError, InvalidInput
from clarion.core.schemas import in_utc

Row = TypeVar("Row")


async def id_page(
    session: AsyncSession,
    query: Select[Row],
    key: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
) -> tuple[Sequence[Row], str | None]:
    """Up to `limit` rows of `query` in the order of their id column `key` (descending when
    `newest_first`), after the row `cursor` names; and the next page's cursor (None on the
    last page). InvalidInput naming `cursor` for one this API did not return."""
    if cursor is not None:
        after = decode_id_cursor(cursor)
        query = query.where(key < after if newest_first else key > after)
    order = key.desc() if newest_first else key
    rows = (await session.scalars(query.order_by(order).limit(limit + 1))).all()
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(getattr(rows[limit - 1], key.key))


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


def decode_id_cursor(cursor: str) -> int:
    """The row id inside a cursor made by `encode_cursor(id)`; InvalidInput naming `cursor`
    when it is not one, or names no possible row (so it never reaches the database)."""
    [row_id] = decode_cursor(cursor, arity=1)
    return cursor_row_id(row_id)


def decode_uuid_cursor(cursor: str) -> uuid.UUID:
    """The uuid inside a cursor made by `encode_cursor(id.hex)`; InvalidInput naming
    `cursor` otherwise."""
    [raw] = decode_cursor(cursor, arity=1)
    return _cursor_uuid(raw)


def decode_time_id_cursor(cursor: str) -> tuple[datetime, int]:
    """The (UTC time, row id) inside a cursor made by `encode_cursor(time.isoformat(), id)`;
    InvalidInput naming `cursor` otherwise."""
    moment, row_id = decode_cursor(cursor, arity=2)
    return _cursor_time(moment), cursor_row_id(row_id)


def decode_time_uuid_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (UTC time, uuid) inside a cursor made by `encode_cursor(time.isoformat(),
    str(id))`; InvalidInput naming `cursor` otherwise."""
    moment, raw = decode_cursor(cursor, arity=2)
    return _cursor_time(moment), _cursor_uuid(raw)


def _cursor_uuid(raw: Any) -> uuid.UUID:
    if not isinstance(raw, str):
        raise _bad_cursor()
    try:
        return uuid.UUID(hex=raw)
    except ValueError as exc:
        raise _bad_cursor() from exc


def _cursor_time(moment: Any) -> datetime:
    """An ISO 8601 time from a cursor, in UTC (a naive one taken as UTC)."""
    try:
        return in_utc(datetime.fromisoformat(moment))
    except (TypeError, ValueError) as exc:  # not a time, or off the calendar in UTC
        raise _bad_cursor() from exc


def cursor_row_id(value: Any) -> int:
    """`value` as a row id taken from a cursor; InvalidInput naming `cursor` if it is none."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ROW_ID:
        raise _bad_cursor()
    return value
