"""The in-memory compiler: one profile's answer to a segment rule, from its traits, computed
traits, seen times and event aggregates (`aggregates.py`), exactly as `segments/README.md`
says and as `sql.py` answers over the database.

`evaluate` answers, `explain` shows every node's answer with what it observed, and
`next_change` says until when the answer stands if nothing but time moves (so real-time
membership knows when to look again).
"""

from __future__ import annotations

import bisect
import re
from calendar import isleap, monthrange
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import cached_property, lru_cache
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clarion.segments import aggregates, values
from clarion.segments.aggregates import DAY_US, instant, micros
from clarion.segments.rules import (
    DATE_OPERATORS,
    MAX_DEPTH,
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
    Window,
    to_json,
)
from clarion.segments.values import COUNT_COMPARE, compare, read

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# How many instants next_change tries before answering conservatively with the next one
# (a lapse check then, which finds no change and looks again): probing costs more than
# the rare early check.
_PROBES = 16

_NOTHING: dict[str, Any] = {}

# Count operators that compare with "at least k", k = count + this: gt 2 is at least 3, and
# lt 3 is its opposite's "at least 3".
_AT_LEAST = {"gte": 0, "gt": 1, "lt": 0, "lte": 1}


@dataclass(frozen=True)
class ProfileFacts:
    """What a rule reads of one canonical profile."""

    traits: dict[str, Any]
    computed: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    aggregates: dict[str, Any]  # the aggregates.py state document


# --- Calendar days --------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def profile_zone(traits: dict[str, Any]) -> tzinfo:
    """The profile's time zone: its `timezone` trait when that names an IANA zone, else UTC."""
    name = traits.get(TIMEZONE_TRAIT)
    return _zone(name) if isinstance(name, str) and name.strip() else UTC


def _date_text(value: Any) -> str | None:
    return value[:10] if isinstance(value, str) and _DATE.match(value) else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _plus(day: date, days: int) -> date | None:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def _month_day(text: str) -> tuple[int, int] | None:
    """The month and day of a date text when some year has them (2000 is a leap year)."""
    month, day = int(text[5:7]), int(text[8:10])
    return (month, day) if 1 <= month <= 12 and 1 <= day <= monthrange(2000, month)[1] else None


def _anniversary(month: int, day: int, year: int) -> date | None:
    """The anniversary of (month, day) in `year` (29 February on 28 February in other
    years); None past year 9999."""
    if year > 9999:
        return None
    if month == 2 and day == 29 and not isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def next_anniversary(text: str, today: date) -> date | None:
    """The first day from `today` on whose month and day the date text falls (a 29 February
    on 28 February in other years); None when no day ever does."""
    month_day = _month_day(text)
    if month_day is None:
        return None
    for year in (today.year, today.year + 1):
        found = _anniversary(*month_day, year)
        if found is None or found >= today:
            return found
    return None


def _calendar(op: str, days: int, value: Any, today: date) -> bool:
    text = _date_text(value)
    if text is None:
        return False
    if op == "anniversary_within_days":
        found = next_anniversary(text, today)
        return found is not None and (found - today).days <= days
    earliest = (today - timedelta(days=days)).isoformat()
    if op == "within_last_days":
        return earliest <= text <= today.isoformat()
    return text < earliest  # more_than_days_ago


def _at_or_after(text: str) -> date | None:
    """The first real date whose ISO text is >= `text` (dates are compared as text)."""
    year, month, day = int(text[:4]), int(text[5:7]), int(text[8:10])
    if year == 0:
        return date(1, 1, 1)
    if month == 0:
        return date(year, 1, 1)
    if month <= 12 and day == 0:
        return date(year, month, 1)
    if month <= 12 and day <= monthrange(year, month)[1]:
        return date(year, month, day)
    if month < 12:
        return date(year, month + 1, 1)
    return date(year + 1, 1, 1) if year < 9999 else None


def _calendar_flips(
    op: str, days: int, text: str, today: date
) -> tuple[list[date], date | None, bool]:
    """The days (after `today`, ascending) on which a calendar-day operator's answer may
    flip, complete up to the returned horizon day (None: complete), and whether it flips on
    each of them (exact: the answer on a later day is today's, changed once per day
    passed)."""
    if op == "anniversary_within_days":
        return _anniversary_flips(days, text, today)
    first = _at_or_after(text)  # the first day on which D <= today holds
    if first is None:
        return [], None, True
    # the first day whose text is > D: from today - N on it, D is too long ago
    after = first if first.isoformat() != text else _plus(first, 1)
    # within_last_days holds from `first` up to `too_old`, more_than_days_ago from
    # `too_old` on (both days listed when they are one: no day holds).
    flips = [first] if op == "within_last_days" else []
    too_old = None if after is None else _plus(after, days)
    if too_old is not None:
        flips.append(too_old)
    return [day for day in flips if day > today], None, True


def _anniversary_flips(days: int, text: str, today: date) -> tuple[list[date], date | None, bool]:
    # Anniversaries are at most 366 days apart, so N >= 365 always holds (or never does); and
    # at least 365 apart, so below 364 each one's stretch A - N .. A ends before the next
    # one's begins: the answer turns true on A - N and false on A + 1, exactly.
    first = next_anniversary(text, today)
    if first is None or days >= 365:
        return [], None, True
    month, day = first.month, int(text[8:10])  # 29 February, even when first is the 28th
    exact = days < 364
    flips: list[date] = []
    for year in range(first.year, first.year + 3):
        anniversary = _anniversary(month, day, year)
        if anniversary is None:
            return [d for d in flips if d > today], None, exact
        flips.extend(d for d in (_plus(anniversary, -days), _plus(anniversary, 1)) if d)
    # Later anniversaries enter no earlier than their day - N.
    later = _anniversary(month, day, first.year + 3)
    horizon = None if later is None else _plus(later, -days)
    return [d for d in flips if d > today and (horizon is None or d < horizon)], horizon, exact


def _start_of(day: date, zone: tzinfo) -> int:
    # Midnight that does not exist (a DST gap) maps, with fold=0, to the gap's start: still
    # the first instant of the day.
    return micros(datetime(day.year, day.month, day.day, tzinfo=zone))


# --- Evaluating -----------------------------------------------------------------------------


def _time_holds(op: str, value: datetime | int, moment: datetime | None, now: datetime) -> bool:
    if moment is None:
        return False
    moment = _aware(moment)
    if isinstance(value, datetime):
        return moment < value if op == "before" else moment > value
    cutoff = now - timedelta(days=value)
    return moment >= cutoff if op == "within_last_days" else moment < cutoff


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def _counted(rule: Performed | Aggregate, value: Any) -> bool:
    """Whether an event condition holds with this count or aggregate value."""
    if isinstance(rule, Performed):
        return COUNT_COMPARE[rule.operator](value, rule.count)
    if value is None:
        return False
    if isinstance(rule.value, tuple):
        return bool(rule.value[0] <= value <= rule.value[1])
    return COUNT_COMPARE[rule.operator](value, rule.value)


def moves_with_time(node: Rule) -> bool:
    """Whether the condition's answer can change with nothing but time passing."""
    match node:
        case Performed(window=Window(days=int())) | Aggregate(window=Window(days=int())):
            return True
        case AttributeTime(value=int()) | Occurrence(value=int()):
            return True
        case Compare(operator=operator):
            return operator in DATE_OPERATORS
    return False


def time_conditions(rule: Rule, segments: Mapping[int, Rule]) -> tuple[Rule, ...]:
    """The conditions of `rule` (and of the segments it names) that time alone can change,
    each once: what `Evaluation.next_change_us` reads."""
    found: dict[int, Rule] = {}

    def visit(node: Rule, depth: int) -> None:
        match node:
            case All(conditions) | Any_(conditions):
                for condition in conditions:
                    visit(condition, depth)
            case Not(condition):
                visit(condition, depth)
            case InSegment(segment_id):
                target = segments.get(segment_id)
                # Cycles are refused when a segment is saved; the depth limit guards the rest.
                if target is not None and depth < MAX_DEPTH:
                    visit(target, depth + 1)
            case _ if moves_with_time(node):
                found[id(node)] = node

    visit(rule, 0)
    return tuple(found.values())


def _earliest(horizons: Iterable[int | None]) -> int | None:
    known = [h for h in horizons if h is not None]
    return min(known) if known else None


class _Evaluator:
    """One profile at one instant."""

    def __init__(
        self,
        facts: ProfileFacts,
        context: RuleContext,
        now: datetime | None = None,
        zone: tzinfo | None = None,
    ) -> None:
        self.facts = facts
        self.context = context
        self.now = _aware(context.now if now is None else now)
        self.now_us = micros(self.now)
        self.zone = profile_zone(facts.traits) if zone is None else zone
        # Each condition's answer and flips, by the node's identity: segments and their
        # next changes read the same conditions over and over (the rules outlive the
        # evaluator).
        self.leaves: dict[int, tuple[bool, Any]] = {}
        self.flip_cache: dict[int, _Flips] = {}

    @cached_property
    def today(self) -> date:
        """The profile's calendar day at this instant (in its time zone)."""
        return self.now.astimezone(self.zone).date()

    def _segment(self, segment_id: int, depth: int) -> Rule | None:
        # Cycles are refused when a segment is saved; the depth limit guards the rest.
        return self.context.segments.get(segment_id) if depth < MAX_DEPTH else None

    def holds(self, rule: Rule, depth: int = 0) -> bool:
        # By type, not by pattern (a class pattern costs twice as much): this runs for every
        # node of every segment evaluated.
        kind = type(rule)
        if kind is All:
            for condition in cast(All, rule).conditions:  # noqa: SIM110 - no generator per node
                if not self.holds(condition, depth):
                    return False
            return True
        if kind is Any_:
            for condition in cast(Any_, rule).conditions:  # noqa: SIM110 - as above
                if self.holds(condition, depth):
                    return True
            return False
        if kind is Not:
            return not self.holds(cast(Not, rule).condition, depth)
        if kind is InSegment:
            target = self._segment(cast(InSegment, rule).segment_id, depth)
            return target is not None and self.holds(target, depth + 1)
        return self.leaf(rule)[0]

    def holds_at(self, rule: Rule, moment_us: int, depth: int = 0) -> bool:
        """Whether the profile matches the rule at a later instant, with nothing but time
        passing: conditions time does not change answer as now, those whose flips are
        exact from them (the answer now, changed once per flip passed), the others anew."""
        kind = type(rule)
        if kind is All:
            return all(self.holds_at(c, moment_us, depth) for c in cast(All, rule).conditions)
        if kind is Any_:
            return any(self.holds_at(c, moment_us, depth) for c in cast(Any_, rule).conditions)
        if kind is Not:
            return not self.holds_at(cast(Not, rule).condition, moment_us, depth)
        if kind is InSegment:
            target = self._segment(cast(InSegment, rule).segment_id, depth)
            return target is not None and self.holds_at(target, moment_us, depth + 1)
        flips = self.flip_cache.get(id(rule))
        if flips is None:
            if not moves_with_time(rule):
                return self.leaf(rule)[0]
            flips = self.flips(rule)
        if not flips.exact:
            return _Evaluator(self.facts, self.context, instant(moment_us), self.zone).leaf(rule)[0]
        passed = bisect.bisect_right(flips.instants, moment_us)
        return self.leaf(rule)[0] != (passed % 2 == 1)

    def leaf(self, rule: Rule) -> tuple[bool, Any]:
        """A condition's answer and the value it observed."""
        key = id(rule)
        found = self.leaves.get(key)
        if found is None:
            found = self.leaves[key] = self._leaf(rule)
        return found

    def _leaf(self, rule: Rule) -> tuple[bool, Any]:
        # By type through a table, not by pattern: this runs for every condition read.
        answer = _LEAVES.get(type(rule))
        if answer is None:
            raise TypeError(f"not a rule node: {rule!r}")
        return answer(self, rule)

    def _compare(self, rule: Compare) -> tuple[bool, Any]:
        actual = read(self.facts.traits, rule.path)
        if rule.operator in DATE_OPERATORS:
            return _calendar(rule.operator, rule.value, actual, self.today), actual
        return compare(rule.operator, rule.value, actual), actual

    def _attribute_time(self, rule: AttributeTime) -> tuple[bool, Any]:
        moment = getattr(self.facts, rule.attribute)
        return _time_holds(rule.operator, rule.value, moment, self.now), moment

    def _performed(self, rule: Performed) -> tuple[bool, Any]:
        n = aggregates.count(self.facts.aggregates, rule, self.now)
        return _counted(rule, n), n

    def _aggregate(self, rule: Aggregate) -> tuple[bool, Any]:
        found = aggregates.aggregate(self.facts.aggregates, rule, self.now)
        return _counted(rule, found), found

    def _occurrence(self, rule: Occurrence) -> tuple[bool, Any]:
        moment = aggregates.occurred(self.facts.aggregates, rule)
        return _time_holds(rule.operator, rule.value, moment, self.now), moment

    def _rfm(self, rule: Rfm) -> tuple[bool, Any]:
        scores = self.rfm_scores
        wanted = {"recency": rule.recency, "frequency": rule.frequency, "monetary": rule.monetary}
        holds = scores is not None and all(
            not accepted or scores[name] in accepted for name, accepted in wanted.items()
        )
        return holds, scores

    def _top_percent(self, rule: TopPercent) -> tuple[bool, Any]:
        value = self.monetary_value()
        boundaries = self.context.rfm.monetary_percentiles if self.context.rfm else ()
        holds = (
            value is not None and len(boundaries) == 99 and value > boundaries[99 - rule.percent]
        )
        return holds, value

    def monetary_value(self) -> float | None:
        """The buyer's revenue in the RFM currency (0 when none); None for a non-buyer."""
        if self.context.rfm is None:
            return None
        orders: Any = self.facts.computed.get("orders")
        if not values.is_number(orders) or orders < 1:
            return None
        revenue: Any = (self.facts.computed.get("revenue") or {}).get(self.context.rfm.currency, 0)
        return revenue if values.is_number(revenue) else 0

    @cached_property
    def rfm_scores(self) -> dict[str, int] | None:
        """The profile's recency, frequency and monetary scores (once for every RFM
        condition); None without orders or without thresholds."""
        thresholds, computed = self.context.rfm, self.facts.computed
        orders: Any = computed.get("orders")
        if thresholds is None or not values.is_number(orders) or orders < 1:
            return None
        if not (thresholds.recency and thresholds.frequency and thresholds.monetary):
            return None  # the batch recompute has not run over any buyer yet
        last = computed.get("last_order_at")
        if not isinstance(last, str):
            return None
        try:
            last_order = _aware(datetime.fromisoformat(last))
        except ValueError:
            return None
        revenue: Any = (computed.get("revenue") or {}).get(thresholds.currency, 0)
        revenue = revenue if values.is_number(revenue) else 0
        return {
            "recency": 1 + sum(last_order > _aware(t) for t in thresholds.recency),
            "frequency": 1 + sum(orders > t for t in thresholds.frequency),
            "monetary": 1 + sum(revenue > t for t in thresholds.monetary),
        }

    def explain(self, rule: Rule, depth: int = 0) -> dict[str, Any]:
        document = to_json(rule)
        match rule:
            case All(conditions) | Any_(conditions):
                children = [self.explain(c, depth) for c in conditions]
                document["conditions"] = children
                answers = (child["holds"] for child in children)
                holds = all(answers) if isinstance(rule, All) else any(answers)
            case Not(condition):
                document["condition"] = self.explain(condition, depth)
                holds = not document["condition"]["holds"]
            case InSegment(segment_id):
                target = self._segment(segment_id, depth)
                document["condition"] = None if target is None else self.explain(target, depth + 1)
                holds = target is not None and document["condition"]["holds"]
            case _:
                holds, observed = self.leaf(rule)
                document["observed"] = _json_value(observed)
                if isinstance(rule, Compare) and rule.operator in DATE_OPERATORS:
                    document["today"] = self.today.isoformat()
        document["holds"] = holds
        return document

    def flips(self, rule: Rule) -> _Flips:
        """When time alone may change a condition's answer (kept for the evaluator's life:
        conditions shared by segments, or read through segment references, are asked once)."""
        key = id(rule)
        known = self.flip_cache.get(key)
        if known is None:
            known = self.flip_cache[key] = self._flips(rule)
        return known

    def _flips(self, rule: Rule) -> _Flips:
        # By type through a table, not by pattern: this runs for every time condition of
        # every profile evaluated.
        flips = _FLIPS.get(type(rule))
        return _NEVER if flips is None else flips(self, rule)

    def _window_flips(self, rule: Performed | Aggregate) -> _Flips:
        state = self.facts.aggregates
        if not state.get(rule.key, _NOTHING).get("ev"):
            return _NEVER  # nothing in the window to leave it
        if isinstance(rule, Performed) and rule.operator in _AT_LEAST:
            # "At least k" (or, for lt / lte, its opposite) changes once, where the count
            # falls below k, if it is not below already.
            below = rule.count + _AT_LEAST[rule.operator] - 1
            drop = aggregates.count_drops(state, rule, self.now, (below,))
            return _Flips((drop[0][0],), None, exact=True) if drop else _NEVER
        # Only the exits after which the condition's own answer differs: between them it
        # holds still, whatever else leaves the window. A count compared with N can only
        # flip where it falls to N or to N - 1.
        answer = self.leaf(rule)[0]
        exits = (
            aggregates.count_drops(state, rule, self.now, (rule.count, rule.count - 1))
            if isinstance(rule, Performed)
            else aggregates.window_values(state, rule, self.now)
        )
        found: list[int] = []
        for moment, value in exits:
            if _counted(rule, value) != answer:
                found.append(moment)
                answer = not answer
        return _Flips(tuple(found), None, exact=True) if found else _NEVER

    def _moment_flips(self, rule: AttributeTime | Occurrence) -> _Flips:
        if not isinstance(rule.value, int):
            return _NEVER  # before / after a fixed instant: time changes nothing
        if isinstance(rule, Occurrence) and rule.key not in self.facts.aggregates:
            return _NEVER  # never performed
        moment = self.leaf(rule)[1]
        if moment is None:
            return _NEVER
        # T >= now - N days holds up to T + N days, then fails (and the reverse for
        # more_than_days_ago): one flip, if still ahead.
        flip = micros(moment) + rule.value * DAY_US + 1
        return _Flips((flip,), None, exact=True) if flip > self.now_us else _NEVER

    def _calendar_flips(self, rule: Compare) -> _Flips:
        if rule.operator not in DATE_OPERATORS:
            return _NEVER
        text = _date_text(read(self.facts.traits, rule.path))
        if text is None:
            return _NEVER
        if rule.operator == "anniversary_within_days":
            text = f"2000{text[4:]}"  # the year is not read: one entry per day of the year
        return _calendar_instants(rule.operator, rule.value, text, self.today, self.zone)


# Each condition's answer and observed value, by the condition's type.
_LEAVES: dict[type, Callable[[_Evaluator, Any], tuple[bool, Any]]] = {
    Compare: _Evaluator._compare,
    AttributeTime: _Evaluator._attribute_time,
    Performed: _Evaluator._performed,
    Aggregate: _Evaluator._aggregate,
    Occurrence: _Evaluator._occurrence,
    Rfm: _Evaluator._rfm,
    TopPercent: _Evaluator._top_percent,
}
# When time alone may change a condition's answer, by the condition's type (the others:
# never).
_FLIPS: dict[type, Callable[[_Evaluator, Any], _Flips]] = {
    Performed: _Evaluator._window_flips,
    Aggregate: _Evaluator._window_flips,
    AttributeTime: _Evaluator._moment_flips,
    Occurrence: _Evaluator._moment_flips,
    Compare: _Evaluator._calendar_flips,
}


@lru_cache(maxsize=4096)
def _calendar_instants(op: str, days: int, text: str, today: date, zone: tzinfo) -> _Flips:
    """`_calendar_flips` as instants in the zone (kept: a day's profiles share birthdays
    and dates, and each day's flips cost dozens of date computations)."""
    flips, horizon, exact = _calendar_flips(op, days, text, today)
    if not flips and horizon is None:
        return _NEVER
    return _Flips(
        tuple(_start_of(day, zone) for day in flips),
        None if horizon is None else _start_of(horizon, zone),
        exact=exact,
    )


class _Flips(NamedTuple):
    """The instants (microseconds, after now, ascending) at which time alone may change one
    condition's answer, complete up to `horizon` (None: complete); `exact` when the answer
    at a later instant is the answer now changed once per instant passed (one listed twice
    changes nothing). A named tuple: made for every time condition of every profile
    evaluated."""

    instants: tuple[int, ...]
    horizon: int | None
    exact: bool


_NEVER = _Flips((), None, exact=True)


# --- The compiler's entry points ------------------------------------------------------------


class Evaluation:
    """One profile at `context.now`: its answers to any number of rules, and when time alone
    next changes them, sharing what they read."""

    def __init__(self, facts: ProfileFacts, context: RuleContext) -> None:
        self._evaluator = _Evaluator(facts, context)

    def holds(self, rule: Rule) -> bool:
        """Whether the profile matches the rule."""
        return self._evaluator.holds(rule)

    def next_change_us(
        self,
        rule: Rule,
        *,
        holds: bool | None = None,
        conditions: tuple[Rule, ...] | None = None,
    ) -> int | None:
        """The earliest instant (microseconds since the Unix epoch, as states keep it) after
        now at which the answer may change with nothing but time passing (never later than a
        real change); None when time changes nothing. `holds`, when given, is the answer now
        (saving its evaluation); `conditions`, the rule's `time_conditions` (saving their
        search)."""
        evaluator = self._evaluator
        if conditions is None:
            conditions = time_conditions(rule, evaluator.context.segments)
        flips = [evaluator.flips(condition) for condition in conditions]
        if not any(f.instants or f.horizon is not None for f in flips):
            return None
        if len(flips) == 1 and _alone(rule, conditions[0]):
            # The rule is its one condition (or its negation): the condition's first flip,
            # when exact, is the rule's change.
            first = _first_flip(flips[0])
            if first is not None:
                return first
        horizon = _earliest(f.horizon for f in flips)
        instants = sorted({t for f in flips for t in f.instants if horizon is None or t < horizon})
        if not instants:
            return horizon
        answer = evaluator.holds(rule) if holds is None else holds
        for moment in instants[:_PROBES]:
            # Between two candidates nothing changes, so the first that differs is the change.
            if evaluator.holds_at(rule, moment) != answer:
                return moment
        if len(instants) > _PROBES:
            return instants[_PROBES]
        return horizon


def _alone(rule: Rule, condition: Rule) -> bool:
    """Whether the rule's answer is the condition's, or its opposite."""
    return rule is condition or (isinstance(rule, Not) and rule.condition is condition)


def _first_flip(flips: _Flips) -> int | None:
    """The first instant at which the condition's answer surely changes, if its flips say."""
    instants = flips.instants
    if not flips.exact or not instants or (len(instants) > 1 and instants[1] == instants[0]):
        return None  # two flips at one instant change nothing
    return instants[0] if flips.horizon is None or instants[0] < flips.horizon else None


def evaluate(rule: Rule, facts: ProfileFacts, context: RuleContext) -> bool:
    """Whether the profile matches the rule at `context.now`."""
    return _Evaluator(facts, context).holds(rule)


def explain(rule: Rule, facts: ProfileFacts, context: RuleContext) -> dict[str, Any]:
    """The rule as JSON, every node with `holds` and (conditions) the value it `observed`."""
    return _Evaluator(facts, context).explain(rule)


def next_change(
    rule: Rule, facts: ProfileFacts, context: RuleContext, *, holds: bool | None = None
) -> datetime | None:
    """`Evaluation.next_change_us` of one rule, as a datetime."""
    found = Evaluation(facts, context).next_change_us(rule, holds=holds)
    return None if found is None else instant(found)
