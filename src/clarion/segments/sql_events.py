"""Event conditions of a segment rule (`event`, `aggregate`, `occurrence`), in one SQL pass.

A profile's events are the track events on the timelines of its canonical row and of every
row merged into it. Rather than a correlated subquery per profile and condition, every event
condition of a rule becomes columns of one aggregate query over the workspace's timeline,
grouped by canonical profile (`cid`); `sql.members_query` joins it once, LEFT, so a profile
without events has NULL aggregates (a count of 0). Each condition picks its own rows (event
name, window, `where`) inside its aggregates with CASE, so one scan serves them all, and the
planner sees one hash join and one hash aggregate however many conditions the rule has.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import eq, ge, gt, le, lt, ne
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Float,
    Subquery,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    not_,
    select,
)

from clarion.ingest.models import Event
from clarion.profiles.models import Profile, ProfileEvent
from clarion.segments.rules import (
    Aggregate,
    EventCondition,
    Occurrence,
    Performed,
    Rule,
    TimeOperator,
    Window,
)
from clarion.segments.values import MAX_SUMMED

Condition = ColumnElement[bool]
# sum and avg are compared after Python's round(x, 6) (README): SQL's ROUND rounds ties
# differently, so the comparison is moved onto the unrounded value instead (`_rounded`).
ROUND_DIGITS = 6


class JsonValue(Protocol):
    """A value read at a path of a JSON document. Each reading is NULL unless the value is
    of that kind (missing and JSON null are of none); conditions may be NULL for false."""

    @property
    def string(self) -> ColumnElement[Any]: ...

    @property
    def number(self) -> ColumnElement[Any]: ...

    @property
    def present(self) -> Condition: ...

    @property
    def distinct_keys(self) -> Sequence[ColumnElement[Any]]:
        """Expressions whose distinct non-NULL values, counted and added, count the
        distinct scalars (numbers numerically, strings and booleans apart)."""
        ...

    def boolean(self, value: bool) -> Condition:
        """Whether the value is this boolean."""
        ...

    def array_has(self, value: str | bool | float) -> Condition:
        """Whether the value is an array with an element `eq` to `value`."""
        ...


class Values(Protocol):
    """What the event pass needs from the rule compiler."""

    def where(self, rule: Rule, properties: ColumnElement[Any]) -> Condition:
        """A `where` filter over an event's properties, two-valued."""
        ...

    def read(self, document: ColumnElement[Any], parts: Sequence[str]) -> JsonValue:
        """The value at `parts` of a JSON document."""
        ...

    def number(self, value: float) -> ColumnElement[Any]:
        """A number bound as the dialect compares it exactly with a document's numbers."""
        ...


@dataclass(frozen=True, slots=True)
class EventPass:
    """The aggregate query (one row per canonical profile with events, `cid` its id) and,
    by `id()` of each event node, its condition over the query's columns."""

    subquery: Subquery
    conditions: dict[int, Condition]


def time_condition(
    column: ColumnElement[Any], operator: TimeOperator, value: datetime | int, now: datetime
) -> Condition:
    """A time column compared as README's **Times** say (NULL, no time: NULL)."""
    if operator == "before":
        return column < value
    if operator == "after":
        return column > value
    assert isinstance(value, int)
    moment = now - timedelta(days=value)
    return column >= moment if operator == "within_last_days" else column < moment


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": eq,
    "neq": ne,
    "gt": gt,
    "gte": ge,
    "lt": lt,
    "lte": le,
}


def compare_count(expression: ColumnElement[Any], operator: str, value: Any) -> Condition:
    """`expression operator value` for the count operators (eq, neq, gt, gte, lt, lte)."""
    condition: Condition = _COMPARE[operator](expression, value)
    return condition


def event_pass(
    nodes: Sequence[EventCondition],
    *,
    dialect: str,
    workspace_id: int,
    now: datetime,
    values: Values,
) -> EventPass:
    """One aggregate query computing every event condition in `nodes`."""
    timeline, events = ProfileEvent.__table__, Event.__table__
    owner = Profile.__table__.alias("owner")
    postgres = dialect == "postgresql"
    columns: list[ColumnElement[Any]] = []
    finish: list[tuple[int, Callable[[Subquery], Condition]]] = []
    for node in {id(node): node for node in nodes}.values():
        rows = _matches(node, events.c, now, values)
        name = f"c{len(columns)}"
        match node:
            case Performed(operator=operator, count=count):
                columns.append(func.count(case((rows, 1))).label(name))
                finish.append((id(node), _counted(name, operator, count)))
            case Aggregate(property=path, function=function):
                found = values.read(events.c.properties, path.split("."))
                columns.append(_aggregate(function, rows, found, postgres).label(name))
                finish.append((id(node), _aggregated(name, node, values, postgres)))
            case Occurrence(which=which, operator=time_operator, value=moment):
                pick = func.min if which == "first" else func.max
                columns.append(pick(case((rows, events.c.timestamp))).label(name))
                finish.append((id(node), _occurred(name, time_operator, moment, now)))
    canonical: ColumnElement[Any] = func.coalesce(owner.c.canonical_id, owner.c.id)
    if not postgres:
        # A bare coalesce() has no type affinity in SQLite, which then cannot index the
        # aggregate for the join with profiles and scans it once per profile (quadratic).
        canonical = cast(canonical, Text)
    query = (
        select(canonical.label("cid"), *columns)
        .select_from(
            timeline.join(events, events.c.id == timeline.c.event_id).join(
                owner, owner.c.id == timeline.c.profile_id
            )
        )
        .where(
            timeline.c.workspace_id == workspace_id,
            events.c.workspace_id == workspace_id,
            owner.c.workspace_id == workspace_id,
            events.c.type == "track",
            events.c.name.in_(sorted({node.event for node in nodes})),
        )
        .group_by(canonical)
    )
    windows = [_window(node) for node in nodes]
    cutoffs = [window.cutoff(now) for window in windows if window is not None]
    if len(cutoffs) == len(nodes) and all(cutoff is not None for cutoff in cutoffs):
        # Every condition has a lower bound: let the (workspace, timestamp) index skip the rest.
        query = query.where(events.c.timestamp >= min(c for c in cutoffs if c is not None))
    subquery = query.subquery("event_conditions")
    return EventPass(subquery, {key: build(subquery) for key, build in finish})


def _window(node: EventCondition) -> Window | None:
    return None if isinstance(node, Occurrence) else node.window


def _matches(node: EventCondition, event: Any, now: datetime, values: Values) -> Condition:
    """Whether an event row is one of the node's events (name, window, where)."""
    parts = [event.name == node.event]
    window = _window(node)
    if window is not None:
        parts.append(event.timestamp >= window.cutoff(now))
        if window.end is not None:
            parts.append(event.timestamp < window.end)
    if node.where is not None:
        parts.append(values.where(node.where, event.properties))
    return and_(*parts)


def _aggregate(
    function: str, rows: Condition, found: JsonValue, postgres: bool
) -> ColumnElement[Any]:
    number = case((rows, found.number))
    if function in ("sum", "avg"):  # of the numbers values.is_summed takes
        summed = case((and_(rows, found.number.between(-MAX_SUMMED, MAX_SUMMED)), found.number))
        if function == "avg":
            return func.avg(summed)
        # SQLite's SUM raises on integer overflow; TOTAL sums in floats, as Python would.
        return func.sum(summed) if postgres else func.total(summed)
    if function in ("min", "max"):
        return func.min(number) if function == "min" else func.max(number)
    counts = [func.count(case((rows, key)).distinct()) for key in found.distinct_keys]
    total: ColumnElement[Any] = counts[0]
    for count in counts[1:]:
        total = total + count
    return total


def _counted(name: str, operator: str, count: int) -> Callable[[Subquery], Condition]:
    return lambda sub: compare_count(func.coalesce(sub.c[name], 0), operator, count)


def _occurred(
    name: str, operator: TimeOperator, moment: datetime | int, now: datetime
) -> Callable[[Subquery], Condition]:
    return lambda sub: time_condition(sub.c[name], operator, moment, now)


def _aggregated(
    name: str, node: Aggregate, values: Values, postgres: bool
) -> Callable[[Subquery], Condition]:
    def build(sub: Subquery) -> Condition:
        column: ColumnElement[Any] = sub.c[name]
        if node.function == "count_distinct":
            column = func.coalesce(column, 0)
        if node.function in ("min", "max", "count_distinct"):
            if isinstance(node.value, tuple):  # between
                low, high = (values.number(v) for v in node.value)
                return and_(column >= low, column <= high)
            return compare_count(column, node.operator, values.number(node.value))
        if node.function == "sum":
            column = func.coalesce(column, 0)
        # PostgreSQL sums numerics exactly; compare the float Python would hold.
        return _rounded(cast(column, Float) if postgres else column, node.operator, node.value)

    return build


def _rounded(column: ColumnElement[Any], operator: str, value: Any) -> Condition:
    """`round(column, 6) operator value` exactly as Python's round decides it. round is
    monotonic, so `round(x) >= v` is `x >= t` for the least float t where it holds."""

    def at_least(v: float, strict: bool) -> Condition:
        threshold = _round_threshold(v, strict=strict)
        if threshold is None:  # never, yet NULL for NULL (avg of nothing stays false)
            return column > literal(math.inf, Float)
        return column >= literal(threshold, Float)

    if operator == "between":
        low, high = value
        return and_(at_least(low, strict=False), not_(at_least(high, strict=True)))
    equal = and_(at_least(value, strict=False), not_(at_least(value, strict=True)))
    match operator:
        case "eq":
            return equal
        case "neq":
            return not_(equal)
        case "gt":
            return at_least(value, strict=True)
        case "gte":
            return at_least(value, strict=False)
        case "lt":
            return not_(at_least(value, strict=False))
        case "lte":
            return not_(at_least(value, strict=True))
    raise ValueError(f"not an aggregate operator: {operator!r}")


def _round_threshold(value: float, *, strict: bool) -> float | None:
    """The least float x with round(x, 6) > value (strict) or >= value; None if none."""

    def holds(x: float) -> bool:
        rounded = round(x, ROUND_DIGITS)
        return rounded > value if strict else rounded >= value

    low, high = _ordinal(-math.inf), _ordinal(math.inf)
    if not holds(math.inf):
        return None
    if holds(-math.inf):
        return -math.inf
    while high - low > 1:  # holds(high) and not holds(low): about 64 steps
        middle = (low + high) // 2
        if holds(_from_ordinal(middle)):
            high = middle
        else:
            low = middle
    return _from_ordinal(high)


_SIGN = 1 << 63


def _ordinal(x: float) -> int:
    """Floats mapped onto integers in the same order (adjacent floats, adjacent integers)."""
    bits: int = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits if bits >= 0 else -(bits & (_SIGN - 1))


def _from_ordinal(n: int) -> float:
    bits = n if n >= 0 else (-n) | _SIGN
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value
