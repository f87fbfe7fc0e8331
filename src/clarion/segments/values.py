"""Reading and comparing JSON values the way the segments README defines it ("Reading a
value"): dotted keys, kinds (booleans are not numbers), code-point string order. Shared by
`aggregates.py` (event `where` filters) and `predicate.py` (traits)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from operator import eq, ge, gt, le, lt, ne
from typing import Any, cast

from clarion.segments.rules import All, Any_, Compare, Not, Rule

_HUGE = 2**1000  # an integer beyond this cannot be summed as a float
# Tuples, not unions: isinstance of `int | float` builds the union on every call.
_NUMBERS = (int, float)
_TEXT_OR_BOOL = (str, bool)


def read(document: Any, path: str) -> Any:
    """The value at the dotted `path` of a JSON document; None when missing or null."""
    value = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def is_number(value: Any) -> bool:
    """Whether a JSON value is a number (booleans are not)."""
    return isinstance(value, _NUMBERS) and not isinstance(value, bool)


# Sums and averages take numbers up to this size: a few of the largest doubles (1.8e308)
# would sum past any double, and no quantity a segment sums comes near it.
MAX_SUMMED = 1e300


def is_summed(value: Any) -> bool:
    """Whether a JSON value counts in sums and averages: a number within +/-`MAX_SUMMED`."""
    return is_number(value) and -MAX_SUMMED <= value <= MAX_SUMMED


def _eq(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    return is_number(actual) and is_number(expected) and actual == expected


def _ordered(op: Callable[[Any, Any], bool], actual: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        return isinstance(actual, str) and op(actual, expected)
    return is_number(actual) and is_number(expected) and op(actual, expected)


_Op = Callable[[Any, Any], bool]
_ORDER: dict[str, _Op] = {"gt": gt, "gte": ge, "lt": lt, "lte": le}
COUNT_COMPARE: dict[str, _Op] = {**_ORDER, "eq": eq, "neq": ne}


def compare(op: str, expected: Any, actual: Any) -> bool:
    """Whether `actual` (None: missing) satisfies `op expected`; calendar-day operators are
    the caller's (they need a time zone) and never hold here."""
    if op == "exists":
        return actual is not None
    if op == "eq":
        return _eq(actual, expected)
    if op == "neq":
        return not _eq(actual, expected)
    if op in _ORDER:
        return _ordered(_ORDER[op], actual, expected)
    if op == "between":
        low, high = expected
        return _ordered(ge, actual, low) and _ordered(le, actual, high)
    if op in ("in", "not_in"):
        found = any(_eq(actual, item) for item in expected)
        return found if op == "in" else not found
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        return isinstance(actual, list) and any(_eq(item, expected) for item in actual)
    if op == "starts_with":
        return isinstance(actual, str) and isinstance(expected, str) and actual.startswith(expected)
    return False


def matches(where: Rule | None, properties: Mapping[str, Any]) -> bool:
    """Whether an event's properties satisfy a `where` filter (None: every event)."""
    if where is None:
        return True
    # By type, not by pattern: this runs for every event a filtered condition keeps.
    kind = type(where)
    if kind is Compare:
        compared = cast(Compare, where)
        return compare(compared.operator, compared.value, read(properties, compared.path))
    if kind is All:
        return all(matches(c, properties) for c in cast(All, where).conditions)
    if kind is Any_:
        return any(matches(c, properties) for c in cast(Any_, where).conditions)
    if kind is Not:
        return not matches(cast(Not, where).condition, properties)
    raise TypeError(f"not a where filter: {where!r}")


def scalar(value: Any) -> Any:
    """What an aggregate keeps of a property value: scalars, None for anything else (and
    for numbers JSON cannot hold: infinities, NaN, integers beyond a float's range)."""
    if isinstance(value, _TEXT_OR_BOOL):
        return value
    if isinstance(value, int):
        return value if abs(value) < _HUGE else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def distinct_key(value: Any) -> str:
    """One text per distinct scalar: numerically equal numbers share one (1 and 1.0)."""
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, str):
        return "s:" + value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"n:{value!r}"
