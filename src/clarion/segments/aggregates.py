"""Per-profile event aggregates, kept event by event, that answer a rule's event conditions
(`event`, `aggregate`, `occurrence`) without rescanning the event log.

A `Spec` is what some condition needs of one (event, where, property): a stable `key` and a
retention. The state is a JSON document, one entry per spec key; times are integer
microseconds since the Unix epoch:

    {"<key>": {"days": 30,                  # last-days windows: events with t >= now - 30 days
               "ranges": [[start, end]],    # from/to windows: events with start <= t < end
               "ev": [t, ...],              # those events, by time ([t, value] with a property)
               "all": {"n": 3, "first": t, "last": t,          # all-time summary
                       "num": 2, "sum": [partials], "min": 1, "max": 9.5,  # (property only;
                                                  # num and sum: values.is_summed ones)
                       "distinct": {"n:1": 1, "s:red": 1, "b:true": 1}}}}  # (count_distinct)

An entry's own retention fields say what it is complete for (`incomplete` compares them with
the specs); an absent entry means no matching event (the state of a new profile), so a rule
set that gains a spec needs `build` (backfill) for profiles that already had events. The
value semantics (reading a dotted key, comparing) are in `values.py`.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from clarion.segments.rules import (
    Aggregate,
    EventCondition,
    Occurrence,
    Performed,
    Rule,
    Window,
    walk,
)
from clarion.segments.values import distinct_key, is_number, is_summed, matches, read, scalar

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000

# --- Exact float sums (Shewchuk partials, as math.fsum keeps them) ---------------------------


def _sum_add(partials: list[float], x: float) -> None:
    # The partials hold the exact sum, so the total is the same in any order of arrival
    # (and after merging two profiles) as math.fsum over all the values.
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            partials[i] = low
            i += 1
        x = high
    partials[i:] = [x]


# --- Times ----------------------------------------------------------------------------------


# The last moment `micros` converted, with its value: an evaluation asks for its one `now`
# for every condition it reads. Held, so no other object can take its identity; one tuple,
# so it is replaced whole.
_last_micros: tuple[datetime | None, int] = (None, 0)


def micros(moment: datetime) -> int:
    """`moment` as integer microseconds since the Unix epoch (naive: taken as UTC)."""
    global _last_micros
    last = _last_micros
    if moment is last[0]:
        return last[1]
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    # Summed from the timedelta's parts: exact, and faster than dividing by a timedelta
    # (this runs for every event and condition a segment reads).
    since = aware - _EPOCH
    value = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    _last_micros = (moment, value)
    return value


def instant(us: int) -> datetime:
    """The UTC datetime `us` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=us)


# --- Specs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """What the rules need kept of the events named `event` matching `where`, with `prop`
    (a dotted property, for aggregates): events of the last `days` days, events within the
    `ranges` (start, end microseconds), an all-time summary, distinct values all-time."""

    key: str
    event: str
    where: Rule | None
    prop: str | None
    days: int | None = None
    ranges: tuple[tuple[int, int], ...] = ()
    all_time: bool = False
    distinct: bool = False


@dataclass
class _Needs:
    days: int | None = None
    ranges: set[tuple[int, int]] = field(default_factory=set)
    all_time: bool = False
    distinct: bool = False


def specs_for(rules: Iterable[Rule]) -> dict[str, Spec]:
    """The specs the event conditions of `rules` need, by key (segment references are not
    followed: pass the referenced segments' rules too)."""
    needs: dict[str, tuple[EventCondition, _Needs]] = {}
    for rule in rules:
        for node in walk(rule):
            if not isinstance(node, Performed | Aggregate | Occurrence):
                continue
            _, need = needs.setdefault(node.key, (node, _Needs()))
            window = None if isinstance(node, Occurrence) else node.window
            if window is None:
                need.all_time = True
                need.distinct |= isinstance(node, Aggregate) and node.function == "count_distinct"
            elif window.days is not None:
                need.days = max(need.days or 0, window.days)
            else:
                assert window.start is not None and window.end is not None
                need.ranges.add((micros(window.start), micros(window.end)))
    return {
        key: Spec(
            key=key,
            event=node.event,
            where=node.where,
            prop=node.property if isinstance(node, Aggregate) else None,
            days=need.days,
            ranges=tuple(sorted(need.ranges)),
            all_time=need.all_time,
            distinct=need.distinct,
        )
        for key, (node, need) in needs.items()
    }


# --- Keeping the state ----------------------------------------------------------------------


class TrackEvent(NamedTuple):
    """A track event as aggregates read it: its name, aware timestamp and properties. A
    named tuple, not a frozen dataclass: a first touch makes one for every event of every
    timeline it rebuilds, and a frozen dataclass takes five times as long to make."""

    name: str
    timestamp: datetime
    properties: dict[str, Any]


_NO_CUTOFFS: Mapping[str, int] = {}


def _time(item: Any) -> int:
    return item if isinstance(item, int) else int(item[0])


def _new_entry(spec: Spec) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if spec.days is not None:
        entry["days"] = spec.days
    if spec.ranges:
        entry["ranges"] = [list(r) for r in spec.ranges]
    if spec.days is not None or spec.ranges:
        entry["ev"] = []
    if spec.all_time:
        summary: dict[str, Any] = {"n": 0, "first": None, "last": None}
        if spec.prop is not None:
            summary.update(num=0, sum=[], min=None, max=None)
            if spec.distinct:
                summary["distinct"] = {}
        entry["all"] = summary
    return entry


def _retained(entry: Mapping[str, Any], t: int, now_us: int) -> bool:
    if "days" in entry and t >= now_us - entry["days"] * DAY_US:
        return True
    return any(start <= t < end for start, end in entry.get("ranges", ()))


def _add(entry: dict[str, Any], t: int, value: Any, has_prop: bool, now_us: int) -> bool:
    changed = False
    if "ev" in entry and _retained(entry, t, now_us):
        bisect.insort(entry["ev"], [t, value] if has_prop else t, key=_time)
        changed = True
    summary = entry.get("all")
    if summary is not None:
        summary["n"] += 1
        summary["first"] = t if summary["first"] is None else min(summary["first"], t)
        summary["last"] = t if summary["last"] is None else max(summary["last"], t)
        if has_prop and is_number(value):
            if is_summed(value):
                summary["num"] += 1
                _sum_add(summary["sum"], float(value))
            summary["min"] = value if summary["min"] is None else min(summary["min"], value)
            summary["max"] = value if summary["max"] is None else max(summary["max"], value)
        if has_prop and value is not None and "distinct" in summary:
            summary["distinct"][distinct_key(value)] = 1
        changed = True
    return changed


def observe(
    state: dict[str, Any], specs: Mapping[str, Spec], event: TrackEvent, *, now: datetime
) -> bool:
    """Count one track event into `state` (in place) for every spec it matches; whether
    anything changed. Call it once per event, in any order of timestamps."""
    return _observe(state, specs, event, micros(event.timestamp), micros(now))


def _observe(
    state: dict[str, Any],
    specs: Mapping[str, Spec],
    event: TrackEvent,
    t: int,
    now_us: int,
    since: Mapping[str, int] = _NO_CUTOFFS,
) -> bool:
    changed = False
    for key, spec in specs.items():
        if t < since.get(key, t):
            continue  # before the only window its spec keeps
        if spec.event != event.name or not matches(spec.where, event.properties):
            continue
        entry = state.get(key)
        fresh = entry is None
        if entry is None:
            entry = _new_entry(spec)
        value = scalar(read(event.properties, spec.prop)) if spec.prop is not None else None
        if _add(entry, t, value, spec.prop is not None, now_us):
            changed = True
            if fresh:
                state[key] = entry
    return changed


def _covers(entry: Mapping[str, Any], spec: Spec) -> bool:
    if spec.days is not None and entry.get("days", -1) < spec.days:
        return False
    if not {tuple(r) for r in spec.ranges} <= {tuple(r) for r in entry.get("ranges", ())}:
        return False
    summary = entry.get("all")
    if spec.all_time and summary is None:
        return False
    return not spec.distinct or (summary is not None and "distinct" in summary)


def incomplete(state: Mapping[str, Any], specs: Mapping[str, Spec]) -> set[str]:
    """The keys whose entries keep less than their spec needs (rebuild them with `build`)."""
    return {key for key, spec in specs.items() if key in state and not _covers(state[key], spec)}


def _narrow(entry: dict[str, Any], days: int | None, ranges: set[tuple[int, int]]) -> None:
    if days is None:
        entry.pop("days", None)
    else:
        entry["days"] = days
    if ranges:
        entry["ranges"] = [list(r) for r in sorted(ranges)]
    else:
        entry.pop("ranges", None)
    if days is None and not ranges:
        entry.pop("ev", None)


def _ranges(entry: Mapping[str, Any]) -> set[tuple[int, int]]:
    return {(int(r[0]), int(r[1])) for r in entry.get("ranges", ())}


def prune(state: dict[str, Any], specs: Mapping[str, Spec], now: datetime) -> None:
    """Drop (in place) the entries no spec needs and whatever no window can count from
    `now` on; an entry keeps at most what its spec needs."""
    now_us = micros(now)
    for key in list(state):
        spec, entry = specs.get(key), state[key]
        if spec is None:
            del state[key]
            continue
        has_days = spec.days is not None and "days" in entry
        days = min(entry["days"], spec.days) if has_days else None
        _narrow(entry, days, _ranges(entry) & set(spec.ranges))
        summary = entry.get("all")
        if summary is not None and not spec.all_time:
            del entry["all"]
        elif summary is not None and not spec.distinct:
            summary.pop("distinct", None)
        if "ev" in entry and "ranges" in entry:
            entry["ev"] = [item for item in entry["ev"] if _retained(entry, _time(item), now_us)]
        elif "ev" in entry:  # a last-days window keeps a suffix of its events
            first = _first_from(entry["ev"], now_us - entry["days"] * DAY_US)
            if first:
                entry["ev"] = entry["ev"][first:]
        if not entry.get("ev") and "all" not in entry and _covers(entry, spec):
            del state[key]  # absent means "no matching event", which is what it holds


def _combine_summaries(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    into["n"] += other["n"]
    for name, pick in (("first", min), ("last", max), ("min", min), ("max", max)):
        if name in into:
            values = [v for v in (into[name], other.get(name)) if v is not None]
            into[name] = pick(values) if values else None
    if "num" in into:
        into["num"] += other.get("num", 0)
        for partial in other.get("sum", ()):
            _sum_add(into["sum"], partial)
    if "distinct" in into:
        if "distinct" in other:
            into["distinct"].update(other["distinct"])
        else:
            del into["distinct"]


def combine(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Add `other`'s state to `into` (in place): the merge of two profiles."""
    for key, theirs in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = copy.deepcopy(theirs)
            continue
        has_days = "days" in mine and "days" in theirs
        events = [*mine.get("ev", ()), *copy.deepcopy(theirs.get("ev", []))]
        _narrow(
            mine,
            min(mine["days"], theirs["days"]) if has_days else None,
            _ranges(mine) & _ranges(theirs),
        )
        if "ev" in mine:
            mine["ev"] = sorted(events, key=_time)
        if "all" in mine and "all" in theirs:
            _combine_summaries(mine["all"], theirs["all"])
        else:
            mine.pop("all", None)


def by_event(specs: Mapping[str, Spec]) -> dict[str, dict[str, Spec]]:
    """The specs by the name of the events they keep, by key: an event is observed by its
    name's specs only."""
    named: dict[str, dict[str, Spec]] = {}
    for key, spec in specs.items():
        named.setdefault(spec.event, {})[key] = spec
    return named


def build(
    specs: Mapping[str, Spec],
    events: Iterable[TrackEvent],
    now: datetime,
    *,
    named: Mapping[str, Mapping[str, Spec]] | None = None,
) -> dict[str, Any]:
    """The state of a profile with these events, from scratch (backfill). `named`, when
    given, is `by_event(specs)` (saving its grouping, for many profiles)."""
    if named is None:
        named = by_event(specs)
    now_us = micros(now)
    timed = sorted(
        ((micros(event.timestamp), event) for event in events if event.name in named),
        key=lambda pair: pair[0],
    )
    since = _cutoffs(specs, now_us)
    state: dict[str, Any] = {}
    for t, event in timed:  # each event is matched against its name's specs only
        _observe(state, named[event.name], event, t, now_us, since)
    return state


def _cutoffs(specs: Mapping[str, Spec], now_us: int) -> dict[str, int]:
    """For the specs that keep only the last N days, the first instant they keep."""
    return {
        key: now_us - spec.days * DAY_US
        for key, spec in specs.items()
        if spec.days is not None and not spec.ranges and not spec.all_time
    }


# --- Reading the state ----------------------------------------------------------------------


def _first_from(events: list[Any], t: int) -> int:
    """The index of the first kept event at or after `t`."""
    if events and isinstance(events[0], list):
        # [t, value] items: [t] sorts before every item of its instant, whatever the value.
        return bisect.bisect_left(events, [t])
    return bisect.bisect_left(events, t)


def _window_span(
    entry: Mapping[str, Any] | None, window: Window, now_us: int
) -> tuple[list[Any], int, int]:
    """The entry's kept events and the bounds (start, end) of those in the window."""
    events: list[Any] = [] if entry is None else entry.get("ev", [])
    if window.days is not None:
        return events, _first_from(events, now_us - window.days * DAY_US), len(events)
    assert window.start is not None and window.end is not None
    low = _first_from(events, micros(window.start))
    return events, low, _first_from(events, micros(window.end))


def _window_items(entry: Mapping[str, Any] | None, window: Window, now_us: int) -> list[Any]:
    events, low, high = _window_span(entry, window, now_us)
    return events[low:high]


def count(state: Mapping[str, Any], node: Performed, now: datetime) -> int:
    """How many matching events `node` counts at `now`."""
    entry = state.get(node.key)
    if node.window is not None:  # counted between the bounds, not sliced out
        _, low, high = _window_span(entry, node.window, micros(now))
        return high - low
    return 0 if entry is None else int(entry.get("all", {}).get("n", 0))


def _function(function: str, values: list[Any]) -> float | int | None:
    if function == "count_distinct":
        return len({distinct_key(v) for v in values if v is not None})
    if function in ("sum", "avg"):
        summed = [v for v in values if is_summed(v)]
        if function == "sum":
            return round(math.fsum(summed), 6)
        return round(math.fsum(summed) / len(summed), 6) if summed else None
    numbers = [v for v in values if is_number(v)]
    if not numbers:
        return None
    found: float | int = min(numbers) if function == "min" else max(numbers)
    return found


def aggregate(state: Mapping[str, Any], node: Aggregate, now: datetime) -> float | int | None:
    """The value of `node`'s function at `now`; None when avg, min or max have no number."""
    entry = state.get(node.key)
    if node.window is not None:
        items = _window_items(entry, node.window, micros(now))
        return _function(node.function, [item[1] for item in items])
    summary = {} if entry is None else entry.get("all", {})
    num: int = summary.get("num", 0)
    if node.function == "count_distinct":
        return len(summary.get("distinct", ()))
    if node.function == "sum":
        return round(math.fsum(summary.get("sum", [])), 6)
    if node.function == "avg":
        return round(math.fsum(summary["sum"]) / num, 6) if num else None
    found: float | int | None = summary.get("min" if node.function == "min" else "max")
    return found


def occurred(state: Mapping[str, Any], node: Occurrence) -> datetime | None:
    """The first or last time of a matching event; None when there is none."""
    summary = state.get(node.key, {}).get("all", {})
    moment = summary.get(node.which)
    return None if moment is None else instant(moment)


def window_values(
    state: Mapping[str, Any], node: Performed | Aggregate, now: datetime
) -> list[tuple[int, Any]]:
    """The instants (microseconds, after `now`) at which events counted now leave the node's
    last-days window, each with the node's value from then on: its `count`, or its
    `aggregate`. Empty when time alone changes nothing (all-time and from/to windows)."""
    window = node.window
    if window is None or window.days is None:
        return []
    items = _window_items(state.get(node.key), window, micros(now))
    stay = window.days * DAY_US + 1
    found: list[tuple[int, Any]] = []
    if isinstance(node, Performed):
        for i, item in enumerate(items):
            t = _time(item)
            if i + 1 < len(items) and _time(items[i + 1]) == t:
                continue  # events of one instant leave together
            found.append((t + stay, len(items) - i - 1))
        return found
    # The value after each exit is the function over the events still in: kept from the
    # newest back, so the whole list costs one pass.
    suffix = _Suffix(node.function)
    later_time: int | None = None
    for item in reversed(items):
        t = _time(item)
        if t != later_time:
            found.append((t + stay, suffix.value()))
            later_time = t
        suffix.add(item[1])
    found.reverse()
    return found


def count_drops(
    state: Mapping[str, Any], node: Performed, now: datetime, counts: Iterable[int]
) -> list[tuple[int, int]]:
    """For each of `counts`, the first instant (microseconds, after `now`) at which events
    leaving the node's last-days window bring its count to it or below, with the count from
    then on; by instant. Empty for all-time and from/to windows."""
    window = node.window
    if window is None or window.days is None:
        return []
    items = _window_items(state.get(node.key), window, micros(now))
    found: dict[int, int] = {}
    for target in counts:
        last = len(items) - target - 1  # the event whose exit leaves `target` counted
        if target < 0 or last < 0:
            continue  # already at or below it, or never
        t = _time(items[last])
        # Events of one instant leave together: the count left is that of the later ones.
        found[t + window.days * DAY_US + 1] = len(items) - _first_from(items, t + 1)
    return sorted(found.items())


class _Suffix:
    """An aggregate function over values added one by one; `value` equals `_function` over
    them."""

    def __init__(self, function: str) -> None:
        self.function = function
        self.partials: list[float] = []
        self.numbers = 0
        self.extreme: float | int | None = None
        self.distinct: set[str] = set()

    def add(self, value: Any) -> None:
        if self.function == "count_distinct":
            if value is not None:
                self.distinct.add(distinct_key(value))
            return
        if self.function in ("sum", "avg"):
            if is_summed(value):
                self.numbers += 1
                _sum_add(self.partials, float(value))
            return
        if not is_number(value):
            return
        self.numbers += 1
        if (
            self.extreme is None
            # <= and >=: values come newest first, and min / max keep the oldest of equals
            or (value <= self.extreme if self.function == "min" else value >= self.extreme)
        ):
            self.extreme = value

    def value(self) -> float | int | None:
        if self.function == "count_distinct":
            return len(self.distinct)
        if self.function == "sum":
            return round(math.fsum(self.partials), 6)
        if not self.numbers:
            return None
        if self.function == "avg":
            return round(math.fsum(self.partials) / self.numbers, 6)
        return self.extreme
