"""Segment membership in SQL: a rule compiled to one query over a whole workspace.

`members_query` selects the ids of a workspace's canonical profiles that match a rule at
`context.now`, on SQLite and PostgreSQL, with exactly the meaning `README.md` gives (the
in-memory `predicate.py` must agree with it). What shapes the SQL:

- Every leaf is two-valued (COALESCE(..., false)): a missing value or a kind mismatch is
  false, never NULL, so `not` is exact. A JSON value is read per kind (`SqliteValue`,
  `PostgresValue`): its string, its number, ... each NULL unless the value is of that kind.
- Event conditions are computed in one pass over the timeline, grouped by canonical profile,
  and joined once (`sql_events`).
- Calendar days depend on the profile's time zone: "today" is computed here for every zone
  the workspace names, and picked per row by a CASE on the `timezone` trait.
- Segment references are inlined; every value is a bound parameter.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    Select,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP

from clarion.profiles.models import Profile
from clarion.segments.predicate import profile_zone
from clarion.segments.rules import (
    DATE_OPERATORS,
    MAX_DEPTH,
    MAX_NODES,
    TIMEZONE_TRAIT,
    Aggregate,
    All,
    Any_,
    AttributeTime,
    Compare,
    InSegment,
    Not,
    Occurrence,
    Performed,
    Rfm,
    Rule,
    RuleContext,
    TopPercent,
    walk,
)
from clarion.segments.sql_events import (
    Condition,
    JsonValue,
    compare_count,
    event_pass,
    time_condition,
)
from clarion.segments.sql_values import PostgresValue, Scalar, SqliteValue

DIALECTS = ("sqlite", "postgresql")

_PROFILES = Profile.__table__
# Inlined segments repeat their SQL at every reference: bound the whole.
MAX_INLINED_NODES = 20 * MAX_NODES
_TIMESTAMPTZ = TIMESTAMP(timezone=True)
_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
# `computed.last_order_at` is written by datetime.isoformat(): no fraction or six digits.
_INSTANT_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*"
_INSTANT_SHAPES = tuple(
    f"0000-00-00T00:00:00{fraction}{offset}"
    for fraction in ("", ".000000")
    for offset in ("", "Z", "+00:00", "-00:00")
)


def members_query(
    rule: Rule, *, dialect: str, workspace_id: int, context: RuleContext
) -> Select[Any]:
    """The ids (`profiles.id`) of the workspace's canonical profiles matching `rule` at
    `context.now`, as one SELECT for `dialect` (sqlite or postgresql)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}: use sqlite or postgresql")
    rule = inline_segments(rule, context.segments)
    context = replace(context, now=_aware(context.now))
    compiler = _Compiler(dialect, context)
    profiles = _PROFILES
    query = select(profiles.c.id).where(
        profiles.c.workspace_id == workspace_id, profiles.c.canonical_id.is_(None)
    )
    nodes = [n for n in walk(rule) if isinstance(n, Performed | Aggregate | Occurrence)]
    if nodes:
        found = event_pass(
            nodes, dialect=dialect, workspace_id=workspace_id, now=context.now, values=compiler
        )
        compiler.events = found.conditions
        query = query.select_from(
            profiles.outerjoin(found.subquery, found.subquery.c.cid == profiles.c.id)
        )
    return query.where(compiler.condition(rule))


def inline_segments(rule: Rule, segments: Mapping[int, Rule]) -> Rule:
    """`rule` with every segment reference replaced by that segment's rule, inlined the same
    way, as `predicate.py` follows them: a missing segment, or a reference deeper than
    MAX_DEPTH (cycles are refused on save; this guards the rest), is false."""
    done: dict[tuple[int, int], Rule] = {}

    def inline(node: Rule, depth: int) -> Rule:
        match node:
            case InSegment(segment_id):
                target = segments.get(segment_id) if depth < MAX_DEPTH else None
                if target is None:
                    return Any_(())
                if (segment_id, depth) not in done:
                    done[segment_id, depth] = inline(target, depth + 1)
                return done[segment_id, depth]
            case All(conditions):
                return All(tuple(inline(c, depth) for c in conditions))
            case Any_(conditions):
                return Any_(tuple(inline(c, depth) for c in conditions))
            case Not(condition):
                return Not(inline(condition, depth))
        return node

    inlined = inline(rule, 0)
    if _size(inlined, {}) > MAX_INLINED_NODES:
        raise ValueError(f"the rule has more than {MAX_INLINED_NODES} nodes once inlined")
    return inlined


def _size(rule: Rule, known: dict[int, int]) -> int:
    """The node count of a tree whose subtrees may be shared (each counted every time)."""
    if id(rule) not in known:
        children: tuple[Rule, ...] = ()
        if isinstance(rule, All | Any_):
            children = rule.conditions
        elif isinstance(rule, Not):
            children = (rule.condition,)
        known[id(rule)] = 1 + sum(_size(child, known) for child in children)
    return known[id(rule)]


def anniversaries(today: date, days: int) -> list[str]:
    """Every 'MM-DD' whose anniversary falls on one of `today .. today + days` (29 February
    falls on 28 February in other years)."""
    found: set[str] = set()
    for offset in range(min(days, 366) + 1):  # a year and a day hold every month-day
        day = today + timedelta(days=offset)
        found.add(day.strftime("%m-%d"))
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            found.add("02-29")
    return sorted(found)


def _sure(condition: ColumnElement[Any]) -> Condition:
    """A condition that is false where SQL would say NULL."""
    return func.coalesce(condition, false(), type_=Boolean)


class _Compiler:
    """Compiles rule nodes (segment references already inlined) into conditions."""

    def __init__(self, dialect: str, context: RuleContext) -> None:
        self.postgres = dialect == "postgresql"
        self.context = context
        self.events: dict[int, Condition] = {}
        self._zones: tuple[date, list[tuple[date, list[str]]]] | None = None

    # --- the boolean tree ----------------------------------------------------------------

    def condition(self, rule: Rule, properties: ColumnElement[Any] | None = None) -> Condition:
        """A node's two-valued condition (`properties`: inside an event's `where`)."""
        match rule:
            case All(conditions):
                parts = [self.condition(c, properties) for c in conditions]
                return and_(*parts) if parts else true()
            case Any_(conditions):
                parts = [self.condition(c, properties) for c in conditions]
                return or_(*parts) if parts else false()
            case Not(condition):
                return not_(self.condition(condition, properties))
            case Compare(source="trait") if properties is None:
                return _sure(self.compare(rule, _PROFILES.c.traits))
            case Compare(source="property") if properties is not None:
                return _sure(self.compare(rule, properties))
            case AttributeTime(attribute, operator, value):
                column = _PROFILES.c[attribute]
                return _sure(time_condition(column, operator, value, self.context.now))
            case Performed() | Aggregate() | Occurrence() if id(rule) in self.events:
                return _sure(self.events[id(rule)])
            case Rfm():
                return _sure(self.rfm(rule))
            case TopPercent(percent=percent):
                return _sure(self.top_percent(percent))
        raise ValueError(f"cannot compile {rule!r} here")

    def where(self, rule: Rule, properties: ColumnElement[Any]) -> Condition:
        """A `where` filter over an event's properties."""
        return self.condition(rule, properties)

    # --- reading and comparing values ------------------------------------------------------

    def read(self, document: ColumnElement[Any], parts: Sequence[str]) -> JsonValue:
        """The value at `parts` of a JSON document column."""
        return PostgresValue(document, parts) if self.postgres else SqliteValue(document, parts)

    def number(self, value: float) -> ColumnElement[Any]:
        """A bound number. PostgreSQL reads JSON numbers as exact numerics; a float is bound
        as the decimal Python prints for it, which is the decimal JSON carries for it."""
        if not self.postgres:
            # SQLite binds 64-bit integers; JSON's larger ones are read as reals anyway.
            big = isinstance(value, int) and not -(2**63) <= value < 2**63
            return literal(float(value) if big else value)
        exact = Decimal(repr(value) if isinstance(value, float) else value)
        # Cast, or PostgreSQL would type the parameter after the other side (a bigint count).
        return cast(literal(exact, Numeric), Numeric)

    def _ordered(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        # Code-point order: SQLite's BINARY already is; PostgreSQL's "C" collation is.
        return text.collate("C") if self.postgres else text

    def compare(self, node: Compare, document: ColumnElement[Any]) -> ColumnElement[Any]:
        """The condition of a trait or property comparison (NULL may stand for false)."""
        found = self.read(document, node.path.split("."))
        value = node.value
        match node.operator:
            case "eq":
                return self._eq(found, value)
            case "neq":
                return not_(_sure(self._eq(found, value)))
            case "gt" | "gte" | "lt" | "lte":
                return self._order(found, node.operator, value)
            case "between":
                low, high = value
                return and_(self._order(found, "gte", low), self._order(found, "lte", high))
            case "in":
                return self._in(found, value)
            case "not_in":
                return not_(_sure(self._in(found, value)))
            case "contains":
                if not isinstance(value, str):
                    return found.array_has(value)
                position = func.strpos if self.postgres else func.instr
                return or_(position(found.string, value) > 0, found.array_has(value))
            case "starts_with":
                return func.substr(found.string, 1, len(value)) == literal(value, Text)
            case "exists":
                return found.present
        if node.operator in DATE_OPERATORS:
            return self._calendar(node.operator, value, found.string, document)
        raise ValueError(f"unknown operator {node.operator!r}")

    def _eq(self, found: JsonValue, value: Scalar) -> ColumnElement[Any]:
        if isinstance(value, bool):
            return found.boolean(value)
        if isinstance(value, str):
            return found.string == literal(value, Text)
        return found.number == self.number(value)

    def _order(self, found: JsonValue, operator: str, value: float | str) -> ColumnElement[Any]:
        if isinstance(value, str):
            return compare_count(self._ordered(found.string), operator, literal(value, Text))
        return compare_count(found.number, operator, self.number(value))

    def _in(self, found: JsonValue, values: Sequence[Scalar]) -> ColumnElement[Any]:
        strings = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if not isinstance(v, str | bool)]
        parts = [found.boolean(v) for v in sorted({v for v in values if isinstance(v, bool)})]
        if strings:
            parts.append(found.string.in_(strings))
        if numbers:
            parts.append(found.number.in_([self.number(v) for v in numbers]))
        return or_(*parts)

    # --- calendar days in the profile's time zone ------------------------------------------

    def _calendar(
        self, operator: str, days: int, text: ColumnElement[Any], traits: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        if self.postgres:
            dated = func.translate(func.left(text, 10), "0123456789", "0" * 10) == "0000-00-00"
        else:
            dated = text.op("GLOB", return_type=Boolean)(literal(_DATE_GLOB, Text))
        day = self._ordered(func.substr(text, 1, 10))
        zone = self.read(traits, [TIMEZONE_TRAIT]).string
        if operator == "within_last_days":
            held = and_(
                day >= self._per_zone(zone, lambda today: (today - timedelta(days)).isoformat()),
                day <= self._per_zone(zone, lambda today: today.isoformat()),
            )
        elif operator == "more_than_days_ago":
            held = day < self._per_zone(zone, lambda today: (today - timedelta(days)).isoformat())
        else:
            month_day = func.substr(text, 6, 5)
            utc, others = self._zone_days()
            held = month_day.in_(anniversaries(utc, days))
            if others:
                held = case(
                    *[
                        (zone.in_(names), month_day.in_(anniversaries(d, days)))
                        for d, names in others
                    ],
                    else_=held,
                )
        return and_(dated, held)

    def _per_zone(
        self, zone: ColumnElement[Any], value: Callable[[date], str]
    ) -> ColumnElement[Any]:
        """`value(today)` for the row's zone: a CASE over the zones whose today is not UTC's."""
        utc, others = self._zone_days()
        if not others:
            return literal(value(utc), Text)
        return case(
            *[(zone.in_(names), literal(value(d), Text)) for d, names in others],
            else_=literal(value(utc), Text),
        )

    def _zone_days(self) -> tuple[date, list[tuple[date, list[str]]]]:
        """UTC's today, and the workspace's zone names grouped by a today that differs."""
        if self._zones is None:
            now = self.context.now
            utc = now.astimezone(UTC).date()
            by_day: dict[date, list[str]] = defaultdict(list)
            for name in sorted(self.context.time_zones):
                # The zone as predicate.py reads the trait (unknown names: UTC).
                today = now.astimezone(profile_zone({TIMEZONE_TRAIT: name})).date()
                if today != utc:
                    by_day[today].append(name)
            self._zones = (utc, sorted(by_day.items()))
        return self._zones

    # --- RFM -------------------------------------------------------------------------------

    def rfm(self, node: Rfm) -> ColumnElement[Any]:
        """Each listed dimension's score (1 + the thresholds the value is above) is listed.
        As `predicate.py` has it, a profile has scores only when it has orders, a readable
        `last_order_at`, and the workspace has thresholds for all three dimensions."""
        thresholds = self.context.rfm
        if thresholds is None or not all(
            (thresholds.recency, thresholds.frequency, thresholds.monetary)
        ):
            return false()
        computed = _PROFILES.c.computed
        orders = self.read(computed, ["orders"]).number
        revenue = self.read(computed, ["revenue", thresholds.currency]).number
        last_order, instant = self._recency(computed)
        parts = [orders >= 1, last_order.is_not(None)]
        for scores, value, bounds, bind in (
            (node.recency, last_order, thresholds.recency, instant),
            (node.frequency, orders, thresholds.frequency, self.number),
            (node.monetary, func.coalesce(revenue, 0), thresholds.monetary, self.number),
        ):
            if scores:
                parts.append(_scored(value, sorted(bounds, key=_sortable), set(scores), bind))
        return and_(*parts)

    def top_percent(self, percent: int) -> ColumnElement[Any]:
        """A buyer whose revenue in the RFM currency (0 when none) is above the stored
        (100 - percent)th percentile; as `predicate.py` has it."""
        thresholds = self.context.rfm
        if thresholds is None or len(thresholds.monetary_percentiles) != 99:
            return false()
        computed = _PROFILES.c.computed
        orders = self.read(computed, ["orders"]).number
        revenue = func.coalesce(self.read(computed, ["revenue", thresholds.currency]).number, 0)
        boundary = thresholds.monetary_percentiles[99 - percent]
        return and_(orders >= 1, revenue > self.number(boundary))

    def _recency(
        self, computed: ColumnElement[Any]
    ) -> tuple[ColumnElement[Any], Callable[[datetime], ColumnElement[Any]]]:
        """`last_order_at` as the text 'YYYY-MM-DDTHH:MM:SS.ffffff' of its UTC instant (NULL
        when unreadable), which orders as the instants do, and how to bind an instant so."""
        text = self.read(computed, ["last_order_at"]).string
        if self.postgres:
            # No kind check: the text of a number, boolean, array or object has no date shape.
            text = computed.op("->>", return_type=Text)(literal("last_order_at", Text))
        # computed.py writes datetime.isoformat() of UTC times: no fraction or six digits.
        fraction = case(
            (func.substr(text, 20, 1) == ".", func.substr(text, 20, 7)), else_=".000000"
        )
        if self.postgres:
            # Shapes by translate, not by regex: a regex per row costs seconds on 1M rows.
            shape = func.translate(text, "0123456789", "0" * 10)
            utc = or_(
                func.length(text).in_((19, 26)),
                func.right(text, 1) == "Z",
                func.right(text, 6).in_(("+00:00", "-00:00")),
            )
            moved = func.timezone("UTC", cast(text, _TIMESTAMPTZ))
            instant = case(
                (
                    shape.in_(_INSTANT_SHAPES),
                    case(
                        (utc, func.left(text, 19).concat(fraction)),
                        else_=func.to_char(moved, 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                    ),
                ),
            )
        else:
            valid = text.op("GLOB", return_type=Boolean)(literal(_INSTANT_GLOB, Text))
            # strftime applies the offset (none: UTC); the fraction is kept as written.
            moved = func.strftime("%Y-%m-%dT%H:%M:%S", text)
            instant = case((valid, moved.concat(fraction)))
        return instant, lambda moment: literal(_instant_text(moment), Text)


def _instant_text(moment: datetime) -> str:
    """An instant as `_Compiler._recency` writes `last_order_at`."""
    return _aware(moment).astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _scored(
    value: ColumnElement[Any],
    bounds: Sequence[Any],
    scores: set[int],
    bind: Callable[[Any], ColumnElement[Any]],
) -> ColumnElement[Any]:
    """Whether `1 + the number of bounds below value` is one of `scores`. With the bounds
    sorted, score k is `bounds[k-2] < value <= bounds[k-1]`: each run of consecutive
    scores is one interval, so the value is compared twice at most per run, not per bound."""
    top = len(bounds) + 1
    listed = sorted(score for score in scores if 1 <= score <= top)
    intervals = []
    for _, run in groupby(enumerate(listed), key=lambda pair: pair[1] - pair[0]):
        members = [score for _, score in run]
        low, high = members[0], members[-1]
        parts = [value > bind(bounds[low - 2])] if low > 1 else []
        if high < top:
            parts.append(value <= bind(bounds[high - 1]))
        intervals.append(and_(*parts) if parts else true())
    return or_(*intervals) if intervals else false()


def _aware(moment: datetime) -> datetime:
    """A naive datetime taken as UTC (as `predicate.py` takes it)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _sortable(bound: Any) -> Any:
    return _aware(bound) if isinstance(bound, datetime) else bound
