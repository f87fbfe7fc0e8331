"""The segment rule language: one AST, read from and written to JSON.

The nodes are immutable; `parsing.parse_rule` reads them from JSON (naming every node at
fault) and `to_json` writes them back in the one canonical form. The meaning of every node
is in `segments/README.md`; `sql.py` and `predicate.py` carry it out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias, get_args

CompareOperator = Literal[
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "exists",
    "between",
    "within_last_days",
    "more_than_days_ago",
    "anniversary_within_days",
]
COMPARE_OPERATORS: tuple[CompareOperator, ...] = get_args(CompareOperator)
# Calendar-day operators over a date held in a trait or property ("YYYY-MM-DD...").
DATE_OPERATORS = frozenset({"within_last_days", "more_than_days_ago", "anniversary_within_days"})
ORDER_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})
CountOperator = Literal["eq", "neq", "gt", "gte", "lt", "lte"]
COUNT_OPERATORS: tuple[CountOperator, ...] = get_args(CountOperator)
AggregateFunction = Literal["sum", "avg", "min", "max", "count_distinct"]
AGGREGATE_FUNCTIONS: tuple[AggregateFunction, ...] = get_args(AggregateFunction)
TimeOperator = Literal["before", "after", "within_last_days", "more_than_days_ago"]
TIME_OPERATORS: tuple[TimeOperator, ...] = get_args(TimeOperator)
Attribute = Literal["first_seen_at", "last_seen_at"]
ATTRIBUTES: tuple[Attribute, ...] = get_args(Attribute)
Which = Literal["first", "last"]
MEASURES = ("lifetime_value",)

# The trait holding a profile's IANA time zone (calendar days are counted in it; UTC when it
# is missing or unknown).
TIMEZONE_TRAIT = "timezone"
MAX_DEPTH = 32
MAX_NODES = 500
MAX_DAYS = 36_600  # a hundred years
MAX_LIST = 1_000
MAX_NAME = 255


# --- Nodes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class All:
    """True when every condition holds (an empty list holds)."""

    conditions: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    """True when at least one condition holds (an empty list does not)."""

    conditions: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """True when the condition does not hold."""

    condition: Rule


@dataclass(frozen=True, slots=True)
class Compare:
    """A comparison of one value in a JSON document: a profile's traits (`trait`) or, in an
    event's `where`, its properties (`property`). `path` is the key, dotted into objects."""

    source: Literal["trait", "property"]
    path: str
    operator: CompareOperator
    value: Any = None


@dataclass(frozen=True, slots=True)
class AttributeTime:
    """A time the profile keeps (first or last seen) compared with `value`."""

    attribute: Attribute
    operator: TimeOperator
    value: datetime | int


@dataclass(frozen=True, slots=True)
class Window:
    """Which events count by their timestamp: the last `days` days up to now, or
    `start` <= timestamp < `end`. No window: all of them."""

    days: int | None = None
    start: datetime | None = None
    end: datetime | None = None

    def cutoff(self, now: datetime) -> datetime | None:
        """The earliest timestamp that counts at `now` (None: no lower bound)."""
        if self.days is not None:
            return now - timedelta(days=self.days)
        return self.start


@dataclass(frozen=True, slots=True)
class Performed:
    """The profile performed `event` (matching `where`) a number of times within `window`,
    the count compared by `operator` with `count` (default: at least once)."""

    event: str
    where: Rule | None = None
    operator: CountOperator = "gte"
    count: int = 1
    window: Window | None = None
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", selection_key(self.event, self.where, None))


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A function over a property of the matching events in `window`, compared with
    `value` (or within `value` = [low, high] for between)."""

    event: str
    property: str
    function: AggregateFunction
    operator: CountOperator | Literal["between"]
    value: float | tuple[float, float]
    where: Rule | None = None
    window: Window | None = None
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", selection_key(self.event, self.where, self.property))


@dataclass(frozen=True, slots=True)
class Occurrence:
    """The first or last time the profile performed `event` (matching `where`) compared with
    `value`; false when it never did."""

    event: str
    which: Which
    operator: TimeOperator
    value: datetime | int
    where: Rule | None = None
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", selection_key(self.event, self.where, None))


@dataclass(frozen=True, slots=True)
class InSegment:
    """The profile matches segment `segment_id`'s rule."""

    segment_id: int


@dataclass(frozen=True, slots=True)
class Rfm:
    """The profile's RFM scores (1-5, quintiles of the workspace's buyers) are among the
    listed ones; an empty tuple accepts any score. Profiles without orders have none."""

    recency: tuple[int, ...] = ()
    frequency: tuple[int, ...] = ()
    monetary: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopPercent:
    """The profile is among the top `percent` % of the workspace's buyers by `measure`:
    its value is above the boundary the last batch recompute found."""

    measure: Literal["lifetime_value"]
    percent: int


Rule: TypeAlias = (
    All
    | Any_
    | Not
    | Compare
    | AttributeTime
    | Performed
    | Aggregate
    | Occurrence
    | InSegment
    | Rfm
    | TopPercent
)
EventCondition: TypeAlias = Performed | Aggregate | Occurrence


def selection_key(event: str, where: Rule | None, prop: str | None) -> str:
    """What an event condition reads, as a short stable key: the events named `event`
    matching `where`, with property `prop` (each condition's `key`, and the key of the
    aggregates entry that answers it)."""
    document = [event, None if where is None else to_json(where), prop]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- Writing and walking --------------------------------------------------------------------


def _time_json(value: datetime | int) -> str | int:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


def _window_json(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    if window.days is not None:
        return {"last_days": window.days}
    assert window.start is not None and window.end is not None
    return {"from": _time_json(window.start), "to": _time_json(window.end)}


def to_json(rule: Rule) -> dict[str, Any]:
    """The canonical JSON document of a rule (what `parse_rule` reads back unchanged)."""
    match rule:
        case All(conditions):
            return {"type": "all", "conditions": [to_json(c) for c in conditions]}
        case Any_(conditions):
            return {"type": "any", "conditions": [to_json(c) for c in conditions]}
        case Not(condition):
            return {"type": "not", "condition": to_json(condition)}
        case Compare(source, path, operator, value):
            document: dict[str, Any] = {"type": source, source: path, "operator": operator}
            if operator != "exists":
                document["value"] = list(value) if isinstance(value, tuple) else value
            return document
        case AttributeTime(attribute, operator, value):
            return {
                "type": "attribute",
                "attribute": attribute,
                "operator": operator,
                "value": _time_json(value),
            }
        case Performed(event, where, operator, count, window):
            document = {"type": "event", "event": event, "operator": operator, "count": count}
            if where is not None:
                document["where"] = to_json(where)
            if window is not None:
                document["window"] = _window_json(window)
            return document
        case Aggregate(event, prop, function, operator, value, where, window):
            document = {
                "type": "aggregate",
                "event": event,
                "property": prop,
                "function": function,
                "operator": operator,
                "value": list(value) if isinstance(value, tuple) else value,
            }
            if where is not None:
                document["where"] = to_json(where)
            if window is not None:
                document["window"] = _window_json(window)
            return document
        case Occurrence(event, which, operator, value, where):
            document = {
                "type": "occurrence",
                "event": event,
                "which": which,
                "operator": operator,
                "value": _time_json(value),
            }
            if where is not None:
                document["where"] = to_json(where)
            return document
        case InSegment(segment_id):
            return {"type": "segment", "segment_id": segment_id}
        case Rfm(recency, frequency, monetary):
            document = {"type": "rfm"}
            for name, scores in (
                ("recency", recency),
                ("frequency", frequency),
                ("monetary", monetary),
            ):
                if scores:
                    document[name] = list(scores)
            return document
        case TopPercent(measure, percent):
            return {"type": "top_percent", "measure": measure, "percent": percent}
    raise TypeError(f"not a rule node: {rule!r}")


def walk(rule: Rule) -> Iterator[Rule]:
    """Every node of the rule, parents before children (`where` filters included)."""
    yield rule
    match rule:
        case All(conditions) | Any_(conditions):
            for condition in conditions:
                yield from walk(condition)
        case Not(condition):
            yield from walk(condition)
        case Performed(where=where) | Aggregate(where=where) | Occurrence(where=where):
            if where is not None:
                yield from walk(where)


def event_names(rule: Rule) -> set[str]:
    """The events whose arrival can change the rule's answer."""
    return {
        node.event for node in walk(rule) if isinstance(node, Performed | Aggregate | Occurrence)
    }


def trait_keys(rule: Rule) -> set[str]:
    """The top-level trait keys whose change can change the rule's answer (the time zone
    trait too when a calendar-day operator reads traits)."""
    keys: set[str] = set()
    for node in walk(rule):
        if isinstance(node, Compare) and node.source == "trait":
            keys.add(node.path.split(".", 1)[0])
            if node.operator in DATE_OPERATORS:
                keys.add(TIMEZONE_TRAIT)
    return keys


def segment_ids(rule: Rule) -> set[int]:
    """The segments the rule refers to (directly)."""
    return {node.segment_id for node in walk(rule) if isinstance(node, InSegment)}


# --- What evaluation needs besides the profile ----------------------------------------------


@dataclass(frozen=True, slots=True)
class RfmThresholds:
    """The workspace's RFM quintile boundaries, four ascending values per dimension."""

    currency: str
    recency: tuple[datetime, ...]  # last_order_at boundaries
    frequency: tuple[float, ...]  # orders
    monetary: tuple[float, ...]  # revenue in minor units of `currency`
    # The 1st to 99th percentiles of the same revenue (`top_percent`); empty: not computed.
    monetary_percentiles: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleContext:
    """The instant a rule is evaluated at, and what it may refer to beyond the profile:
    the rules of the segments it names (inlined), the RFM thresholds, and (for SQL) every
    time zone the workspace's profiles name in their `timezone` trait."""

    now: datetime
    segments: Mapping[int, Rule] = field(default_factory=dict)
    rfm: RfmThresholds | None = None
    time_zones: frozenset[str] = frozenset()
