"""The CSV convention profile import and export share: identity columns, typed trait columns.

A header names identity columns (`user_id`, `email`, `phone`, case and spaces ignored) and
trait columns. A trait column holds text unless its header ends in a type, `name:TYPE`:

    str       the cell as written (the default)      int    a whole number within 64 bits
    float     a finite decimal number                bool   true/false, yes/no, 1/0
    date      an ISO date, stored as `YYYY-MM-DD`    json   any JSON value (lists, objects, null)
    datetime  ISO 8601, stored in UTC (no offset given means UTC)

Numbers are written in ASCII digits (`int` and `float` also read other scripts' digits and
`1_000`); JSON numbers too must be finite and whole ones within 64 bits, and JSON documents
nested at most `MAX_JSON_DEPTH` levels, as both databases store them.

An empty cell sets nothing. Untyped columns whose name starts with `clarion_` are read-only
profile data that export writes (ids, computed traits) and import ignores. Export writes a
type wherever plain text would not read back as the same value, so an exported file imports
into another workspace with the same traits.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from clarion.core.documents import INT64_MAX, INT64_MIN, FaultKind, json_fault
from clarion.core.documents import MAX_JSON_DEPTH as MAX_JSON_DEPTH  # how deep `json` cells go
from clarion.core.schemas import in_utc

IDENTITY_COLUMNS = ("user_id", "email", "phone")
RESERVED_PREFIX = "clarion_"
TYPES = ("str", "int", "float", "bool", "date", "datetime", "json")
MAX_NAME_LENGTH = 255  # trait keys and identity values are stored in 255-character columns

_MAX_INT_DIGITS = len(str(INT64_MAX))
# ASCII only: `int` and `float` also take other scripts' digits and `_` between digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE, _FALSE = {"true", "yes", "1", "y", "t"}, {"false", "no", "0", "n", "f"}
# How a `json` cell's fault reads (`core.documents.json_fault`).
_FAULTS = {
    FaultKind.BEYOND_64_BITS: "a number beyond 64 bits",
    FaultKind.NOT_FINITE: "not a finite number",
    FaultKind.NUL: "contains a NUL character",
    FaultKind.NOT_UNICODE: "not valid Unicode text",
    FaultKind.TOO_DEEP: f"nested more than {MAX_JSON_DEPTH} levels deep",
    FaultKind.KEY_NOT_TEXT: "not JSON",
    FaultKind.NOT_JSON: "not JSON",
}


class CellError(ValueError):
    """A cell does not hold a value of its column's type."""


@dataclass(frozen=True, slots=True)
class Column:
    """One header cell: what it is (identity, trait or ignored) and the trait's type."""

    header: str
    role: str  # "identity", "trait" or "ignored"
    name: str  # the identity kind or the trait key
    type: str = "str"


def parse_header_cell(header: str) -> Column | str:
    """The column a header cell names, or why it names none (an error message)."""
    name, colon, suffix = header.rpartition(":")
    if not colon:
        key = header.strip().lower()
        if key in IDENTITY_COLUMNS:
            return Column(header, "identity", key)
        if header.startswith(RESERVED_PREFIX):
            return Column(header, "ignored", header)
        name, suffix = header, "str"
    elif suffix not in TYPES:
        return f"unknown type {suffix!r}: use one of {', '.join(TYPES)}"
    elif name in ("email", "phone"):
        return "email and phone are identity columns and take no type"
    if not name.strip():
        return "a trait column needs a name"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    return Column(header, "trait", name, suffix)


def parse_cell(text: str, type_: str) -> Any:
    """The trait value a non-empty cell holds; CellError saying why not."""
    if type_ == "str":
        return text
    value = text.strip()
    if type_ == "int":
        if not _INTEGER.fullmatch(value):
            raise CellError("not a whole number")
        return _integer(value)
    if type_ == "float":
        if not _DECIMAL.fullmatch(value):
            raise CellError("not a number")
        return _finite(value)
    if type_ == "bool":
        lowered = value.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise CellError("not true or false")
    if type_ == "date":
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise CellError("not an ISO date (YYYY-MM-DD)") from None
    if type_ == "datetime":
        return _utc_datetime(value)
    return _json(value)


def _integer(digits: str) -> int:
    """A whole number (ASCII digits, an optional sign) within 64 bits; CellError otherwise."""
    # Counted first: `int` refuses (ValueError) strings of more than 4,300 digits.
    if len(digits.lstrip("+-").lstrip("0")) > _MAX_INT_DIGITS:
        raise CellError("a number beyond 64 bits")
    number = int(digits)
    if not INT64_MIN <= number <= INT64_MAX:
        raise CellError("a number beyond 64 bits")
    return number


def _finite(numeral: str) -> float:
    """A JSON or decimal numeral as a float; CellError for one past a double's range, which
    would be stored as null."""
    number = float(numeral)
    if not math.isfinite(number):
        raise CellError("not a finite number")
    return number


def _utc_datetime(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CellError("not an ISO 8601 date and time") from None
    try:
        moment = in_utc(moment)  # 9999-12-31T23:00-02:00 is in the year 10000 in UTC
    except ValueError:
        raise CellError("beyond the range of dates (years 1 to 9999 in UTC)") from None
    return moment.isoformat()


def _json(value: str) -> Any:
    try:
        document = json.loads(
            value, parse_constant=_no_constant, parse_float=_finite, parse_int=_integer
        )
    except CellError:
        raise
    except RecursionError:
        raise CellError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError:
        raise CellError("not JSON") from None
    return _storable(document)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _storable(document: Any) -> Any:
    """`document` if both databases store it as JSON; CellError naming its first fault
    otherwise (`json` never reads a non-finite float, a key that is not text or a value of
    another type, but the messages stand for any document)."""
    fault = json_fault(document)
    if fault is not None:
        raise CellError(_FAULTS[fault.kind])
    return document


def value_kind(value: Any) -> str:
    """The narrowest column type that writes `value` so that it reads back the same."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str) and value:
        return "str"
    return "json"  # null, "", lists and objects


def widen(kind: str | None, value: Any) -> str:
    """The column type for a key already seen as `kind` and now holding `value`."""
    seen = value_kind(value)
    return seen if kind is None or kind == seen else "json"


def trait_header(key: str, kind: str) -> str | None:
    """The header of a trait column: bare for plain text, else with its type; None for a key
    no header can name (blank, or too long)."""
    typed = f"{key}:{kind}"
    if not isinstance(parse_header_cell(typed), Column):
        return None
    bare = parse_header_cell(key)
    plain = isinstance(bare, Column) and bare.role == "trait" and bare.name == key
    return key if kind == "str" and plain else typed


def format_cell(value: Any, kind: str) -> str:
    """A trait value as a cell of a column of type `kind` (see `value_kind`)."""
    if kind == "str":
        return str(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind in ("int", "float"):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
