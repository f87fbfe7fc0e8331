"""JSON values in SQL, read per kind, the way the segments README reads them: a value's
string, number, ... each NULL unless the value is of that kind, on SQLite (`json_type`) and
PostgreSQL (`jsonb_typeof`). Used by the SQL compiler (`sql.py`, `sql_events.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    Text,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from clarion.segments.sql_events import Condition

Scalar = str | bool | int | float
# Keys SQLite 3.40's JSON paths cannot name: it matches a path's label against the key as
# escaped in the document, and orjson escapes quotes, backslashes and control characters.
_ESCAPED = frozenset('"\\') | frozenset(map(chr, range(0x20)))


class SqliteValue:
    """A value at a path of a JSON text document (SQLite's json_type names its kind)."""

    def __init__(self, document: ColumnElement[Any], parts: Sequence[str]) -> None:
        self.document, self.path = _sqlite_locate(document, parts)
        self.kind = func.json_type(self.document, self.path, type_=Text)
        raw = func.json_extract(self.document, self.path)
        self.string: ColumnElement[Any] = case((self.kind == "text", raw))
        self.number: ColumnElement[Any] = case((self.kind.in_(("integer", "real")), raw))
        self.present: Condition = self.kind != "null"
        # json_extract reads booleans as 1 and 0: count them apart from numbers.
        self.distinct_keys = (
            case((self.kind.in_(("integer", "real", "text")), raw)),
            case((self.kind.in_(("true", "false")), self.kind)),
        )

    def boolean(self, value: bool) -> Condition:
        """Whether the value is this boolean."""
        return self.kind == ("true" if value else "false")

    def array_has(self, value: Scalar) -> Condition:
        """Whether the value is an array with an element `eq` to `value`."""
        element = func.json_each(self.document, self.path).table_valued("type", "value")
        if isinstance(value, bool):
            same = element.c.type == ("true" if value else "false")
        elif isinstance(value, str):
            same = and_(element.c.type == "text", element.c.value == value)
        else:
            same = and_(element.c.type.in_(("integer", "real")), element.c.value == value)
        return and_(self.kind == "array", exists().where(same))


def _sqlite_locate(
    document: ColumnElement[Any], parts: Sequence[str]
) -> tuple[ColumnElement[Any], str]:
    """A (document, JSON path) pair naming the value at `parts`. A key a path cannot name
    is looked up by json_each, whose member becomes the document the rest is read from."""
    path = "$"
    for part in parts:
        if _ESCAPED.isdisjoint(part):
            path += f'."{part}"'
            continue
        member = func.json_each(document, path).table_valued("key", "value", "type")
        document = (
            select(
                case(
                    (member.c.type.in_(("true", "false", "null")), member.c.type),
                    else_=func.json_quote(member.c.value),
                )
            )
            .where(member.c.key == part)
            .limit(1)
            .scalar_subquery()
        )
        path = "$"
    return document, path


class PostgresValue:
    """A value at a path of a jsonb document (`->` by text keys only reads objects)."""

    def __init__(self, document: ColumnElement[Any], parts: Sequence[str]) -> None:
        parent = document
        for part in parts[:-1]:
            parent = parent.op("->", return_type=JSONB)(literal(part, Text))
        key = literal(parts[-1], Text)
        self.json = parent.op("->", return_type=JSONB)(key)
        text = parent.op("->>", return_type=Text)(key)
        self.kind = func.jsonb_typeof(self.json, type_=Text)
        self.string: ColumnElement[Any] = case((self.kind == "string", text))
        # Cast inside the CASE: PostgreSQL does not promise to short-circuit AND.
        self.number: ColumnElement[Any] = case((self.kind == "number", cast(text, Numeric)))
        self.present: Condition = self.kind != "null"
        self._text = text
        # jsonb equality already tells kinds apart and holds 1 = 1.0.
        self.distinct_keys = (case((self.kind.in_(("string", "number", "boolean")), self.json)),)

    def boolean(self, value: bool) -> Condition:
        """Whether the value is this boolean."""
        return and_(self.kind == "boolean", self._text == ("true" if value else "false"))

    def array_has(self, value: Scalar) -> Condition:
        """Whether the value is an array with an element `eq` to `value`."""
        # Containment of a one-scalar array tests the top-level elements with jsonb equality.
        probe = literal([value], JSONB)
        return and_(self.kind == "array", self.json.op("@>", return_type=Boolean)(probe))
