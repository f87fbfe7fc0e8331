"""Per-profile event aggregates: specs, keeping state event by event, pruning, merging, and
answers equal to a full scan of the events whatever the order of arrival."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.segments import aggregates, values
from clarion.segments.aggregates import Spec, TrackEvent
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import Aggregate, Occurrence, Performed, Rule, Window

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def event(name: str, at: datetime, **properties: Any) -> TrackEvent:
    return TrackEvent(name, at, properties)


def node(document: dict[str, Any]) -> Any:
    return parse_rule(document)


def specs_of(*documents: dict[str, Any]) -> dict[str, Spec]:
    return aggregates.specs_for(parse_rule(d) for d in documents)


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """The state as the database gives it back."""
    loaded: dict[str, Any] = json.loads(json.dumps(state))
    return loaded


OCCURS = {"operator": "within_last_days", "value": 1}
BOUGHT_7 = {"type": "event", "event": "Bought", "window": {"last_days": 7}}
BOUGHT_30 = {"type": "event", "event": "Bought", "window": {"last_days": 30}}
BOUGHT_EVER = {"type": "event", "event": "Bought"}
BOUGHT_MARCH = {
    "type": "event",
    "event": "Bought",
    "window": {"from": "2026-03-01", "to": "2026-04-01"},
}


def agg(function: str, window: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    document = {
        "type": "aggregate",
        "event": "Bought",
        "property": "price",
        "function": function,
        "operator": "gte",
        "value": 0,
        **extra,
    }
    if window is not None:
        document["window"] = window
    return document


# --- Specs ----------------------------------------------------------------------------------


def test_conditions_on_the_same_event_and_filter_share_one_spec() -> None:
    last = {"type": "occurrence", "event": "Bought", "which": "last", "operator": "after"}
    last["value"] = "2026-01-01"
    keys = {node(d).key for d in (BOUGHT_7, BOUGHT_EVER, last)}
    assert len(keys) == 1
    [key] = keys
    assert len(key) == 16 and int(key, 16) >= 0
    assert node(agg("sum")).key not in keys
    filtered = {**BOUGHT_7, "where": {"type": "property", "property": "sku", "operator": "exists"}}
    assert node(filtered).key not in keys


def test_specs_keep_the_longest_window_the_ranges_and_all_time_summaries() -> None:
    specs = specs_of(
        {"type": "all", "conditions": [BOUGHT_7, BOUGHT_30, BOUGHT_MARCH]},
        agg("count_distinct"),
        agg("sum", {"last_days": 3}),
    )
    bought = specs[node(BOUGHT_7).key]
    assert bought.days == 30 and not bought.all_time and bought.prop is None
    march = (aggregates.micros(datetime(2026, 3, 1, tzinfo=UTC)),)
    assert bought.ranges == ((march[0], aggregates.micros(datetime(2026, 4, 1, tzinfo=UTC))),)
    price = specs[node(agg("sum")).key]
    assert price.prop == "price" and price.all_time and price.distinct and price.days == 3


def test_windowed_count_distinct_needs_no_all_time_distinct_values() -> None:
    [spec] = specs_of(agg("count_distinct", {"last_days": 3}), agg("max")).values()
    assert spec.all_time and not spec.distinct


# --- Observing ------------------------------------------------------------------------------


def test_observe_counts_only_matching_events() -> None:
    where = {"type": "property", "property": "item.sku", "operator": "eq", "value": "A1"}
    specs = specs_of({**BOUGHT_EVER, "where": where})
    state: dict[str, Any] = {}
    assert not aggregates.observe(state, specs, event("Viewed", NOW, item={"sku": "A1"}), now=NOW)
    assert not aggregates.observe(state, specs, event("Bought", NOW, item={"sku": "B"}), now=NOW)
    assert not aggregates.observe(state, specs, event("Bought", NOW, item="A1"), now=NOW)
    assert state == {}
    assert aggregates.observe(state, specs, event("Bought", NOW, item={"sku": "A1"}), now=NOW)
    assert aggregates.count(state, node({**BOUGHT_EVER, "where": where}), NOW) == 1


def test_specs_by_event_name_and_build_observes_each_event_with_its_names_specs() -> None:
    viewed = {"type": "event", "event": "Viewed", "window": {"last_days": 7}}
    specs = specs_of(BOUGHT_7, BOUGHT_EVER, agg("sum"), viewed)
    named = aggregates.by_event(specs)
    assert sorted(named) == ["Bought", "Viewed"]
    assert {key for group in named.values() for key in group} == set(specs)
    assert all(spec.event == name for name, group in named.items() for spec in group.values())
    events = [
        event("Bought", NOW - timedelta(days=2), price=5),
        event("Viewed", NOW - timedelta(days=1)),
        event("Opened", NOW - timedelta(hours=1)),
        event("Bought", NOW - timedelta(days=40), price=7),
    ]
    one_by_one: dict[str, Any] = {}
    for each in sorted(events, key=lambda e: e.timestamp):
        aggregates.observe(one_by_one, specs, each, now=NOW)
    assert aggregates.build(specs, events, NOW) == one_by_one
    assert aggregates.count(one_by_one, node(viewed), NOW) == 1
    assert aggregates.count(one_by_one, node(BOUGHT_EVER), NOW) == 2


def test_an_event_too_old_for_every_window_changes_nothing() -> None:
    specs = specs_of(BOUGHT_7)
    old = event("Bought", NOW - timedelta(days=8))
    state: dict[str, Any] = {}
    assert not aggregates.observe(state, specs, old, now=NOW)
    assert state == {}


def test_late_events_are_kept_in_time_order_and_counted_by_window() -> None:
    specs = specs_of(BOUGHT_7)
    state: dict[str, Any] = {}
    for days in (1, 6, 3, 0.5, 2):
        aggregates.observe(state, specs, event("Bought", NOW - timedelta(days=days)), now=NOW)
    [entry] = state.values()
    assert entry["ev"] == sorted(entry["ev"])
    assert aggregates.count(state, node(BOUGHT_7), NOW) == 5
    assert aggregates.count(state, node(BOUGHT_7), NOW + timedelta(days=4)) == 4  # 3 days: edge
    assert aggregates.count(state, node(BOUGHT_7), NOW + timedelta(days=5)) == 3


def test_last_days_window_edges_and_future_events() -> None:
    specs = specs_of(BOUGHT_7)
    edge = NOW - timedelta(days=7)
    state = aggregates.build(
        specs, [event("Bought", edge), event("Bought", edge - US), event("Bought", NOW + US)], NOW
    )
    assert aggregates.count(state, node(BOUGHT_7), NOW) == 2  # the edge counts, so does later
    assert aggregates.count(state, node(BOUGHT_7), NOW + US) == 1
    assert aggregates.window_values(state, node(BOUGHT_7), NOW) == [
        (aggregates.micros(edge + timedelta(days=7) + US), 1),
        (aggregates.micros(NOW + US + timedelta(days=7) + US), 0),
    ]


def test_from_to_window_includes_from_and_excludes_to() -> None:
    specs = specs_of(BOUGHT_MARCH, BOUGHT_7)  # the 7 days keep future events too
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    events = [event("Bought", t) for t in (start - US, start, end - US, end)]
    state = aggregates.build(specs, events, NOW)
    assert aggregates.count(state, node(BOUGHT_MARCH), NOW) == 2
    assert aggregates.count(state, node(BOUGHT_MARCH), NOW + timedelta(days=900)) == 2
    assert aggregates.window_values(state, node(BOUGHT_MARCH), NOW) == []


def test_state_is_json_and_compact() -> None:
    specs = specs_of(BOUGHT_7, agg("count_distinct"), agg("avg", {"last_days": 2}))
    events = [
        event("Bought", NOW - timedelta(hours=h), price=p)
        for h, p in ((1, 1), (2, 1.0), (3, "1"), (4, True), (5, [1]), (6, None))
    ]
    state = aggregates.build(specs, events, NOW)
    assert roundtrip(state) == state
    entry = state[node(agg("sum")).key]
    assert entry["ev"][0] == [aggregates.micros(NOW - timedelta(hours=6)), None]
    assert sorted(entry["all"]["distinct"]) == ["b:true", "n:1", "s:1"]
    assert isinstance(state[node(BOUGHT_7).key]["ev"][0], int)


# --- Functions ------------------------------------------------------------------------------


def values_state(values: list[Any], window: dict[str, Any] | None) -> dict[str, Any]:
    functions = ("sum", "avg", "min", "max", "count_distinct")
    specs = specs_of(*(agg(f, window) for f in functions))
    events = [event("Bought", NOW - timedelta(minutes=i), price=v) for i, v in enumerate(values)]
    return aggregates.build(specs, events, NOW)


def value_of(state: dict[str, Any], function: str, window: dict[str, Any] | None) -> Any:
    return aggregates.aggregate(state, node(agg(function, window)), NOW)


WINDOWS = (None, {"last_days": 1}, {"from": "2026-03-01", "to": "2026-03-16"})


def test_functions_take_numbers_only_and_count_distinct_scalars() -> None:
    values = [3, 1.5, "9", True, False, None, [4], {"a": 1}, 1, 1.0, "1"]
    for window in WINDOWS:
        state = values_state(values, window)
        assert value_of(state, "sum", window) == 6.5
        assert value_of(state, "avg", window) == round(6.5 / 4, 6)
        assert value_of(state, "min", window) == 1
        assert value_of(state, "max", window) == 3
        # 3, 1.5, "9", True, False, 1 (= 1.0), "1"
        assert value_of(state, "count_distinct", window) == 7


def test_functions_of_nothing() -> None:
    for window in WINDOWS:
        for state in (values_state([], window), values_state(["a", True], window)):
            assert value_of(state, "sum", window) == 0
            assert value_of(state, "avg", window) is None
            assert value_of(state, "min", window) is None
            assert value_of(state, "max", window) is None
        assert value_of(values_state([], window), "count_distinct", window) == 0


def test_sums_are_exact_then_rounded_whatever_the_order() -> None:
    values = [1e16, 1.0, -1e16, 0.1, 0.2]
    for window in WINDOWS:
        for ordering in (values, values[::-1], [0.1, 1e16, 0.2, -1e16, 1.0]):
            state = values_state(ordering, window)
            assert value_of(state, "sum", window) == 1.3
            assert value_of(state, "avg", window) == 0.26


def test_occurrence_first_and_last_whatever_the_order() -> None:
    specs = specs_of({"type": "occurrence", "event": "Bought", "which": "first"} | OCCURS)
    times = [NOW - timedelta(days=d) for d in (3, 900, 1)]
    state: dict[str, Any] = {}
    for t in times:
        aggregates.observe(state, specs, event("Bought", t), now=NOW)
    first = node({"type": "occurrence", "event": "Bought", "which": "first"} | OCCURS)
    last = node({"type": "occurrence", "event": "Bought", "which": "last"} | OCCURS)
    assert aggregates.occurred(state, first) == NOW - timedelta(days=900)
    assert aggregates.occurred(state, last) == NOW - timedelta(days=1)
    assert aggregates.occurred({}, last) is None


# --- Prune, combine, incomplete -------------------------------------------------------------


def test_prune_drops_what_no_window_counts_and_unneeded_entries() -> None:
    february = {**BOUGHT_EVER, "window": {"from": "2026-02-01", "to": "2026-03-01"}}
    specs = specs_of(BOUGHT_7, february, agg("sum"))
    feb = datetime(2026, 2, 10, tzinfo=UTC)
    events = [event("Bought", t, price=1) for t in (feb, NOW - timedelta(days=1), NOW)]
    state = aggregates.build(specs, events, NOW)
    assert len(state[node(BOUGHT_7).key]["ev"]) == 3
    later = NOW + timedelta(days=60)
    aggregates.prune(state, specs, later)
    assert state[node(BOUGHT_7).key]["ev"] == [aggregates.micros(feb)]
    assert aggregates.count(state, node(february), later) == 1
    assert aggregates.count(state, node(BOUGHT_7), later) == 0
    assert aggregates.aggregate(state, node(agg("sum")), later) == 3
    # With only the 7-day window left, nothing at all is left after 60 days.
    aggregates.prune(state, specs_of(BOUGHT_7), later)
    assert state == {}


def test_prune_narrows_retention_and_incomplete_flags_what_must_be_rebuilt() -> None:
    wide = specs_of(BOUGHT_30, BOUGHT_EVER, agg("count_distinct"))
    narrow = specs_of(BOUGHT_7, agg("sum", {"last_days": 7}))
    bought, price = node(BOUGHT_7).key, node(agg("sum")).key
    state = aggregates.build(wide, [event("Bought", NOW - timedelta(days=1), price=2)], NOW)
    assert aggregates.incomplete(state, wide) == set()
    aggregates.prune(state, narrow, NOW)
    assert state[bought]["days"] == 7 and "all" not in state[bought]
    # The price entry kept no events for a 7-day window: it stays, empty, to say so.
    assert state[price] == {}
    assert aggregates.incomplete(state, narrow) == {price}
    assert aggregates.incomplete(state, wide) == {bought, price}
    # Observing keeps to what an entry holds, so it stays flagged until rebuilt.
    aggregates.observe(state, wide, event("Bought", NOW, price=3), now=NOW)
    assert aggregates.incomplete(state, wide) == {bought, price}
    state.update(aggregates.build(narrow, [event("Bought", NOW, price=3)], NOW))
    assert aggregates.incomplete(state, narrow) == set()


def test_combine_equals_build_of_both_timelines() -> None:
    specs = specs_of(BOUGHT_7, BOUGHT_MARCH, agg("count_distinct"), agg("avg", {"last_days": 7}))
    mine = [event("Bought", NOW - timedelta(days=d), price=d) for d in (1, 20, 400)]
    theirs = [event("Bought", NOW - timedelta(days=d), price=d) for d in (2, 1, 9)]
    into = aggregates.build(specs, mine, NOW)
    other = aggregates.build(specs, theirs, NOW)
    before = copy.deepcopy(other)
    aggregates.combine(into, other)
    assert other == before
    assert answers(into, NOW) == answers(aggregates.build(specs, mine + theirs, NOW), NOW)
    only_theirs: dict[str, Any] = {}
    aggregates.combine(only_theirs, other)
    assert only_theirs == other


# --- Incremental equals a full scan (property) ----------------------------------------------

NAMES = ("Bought", "Viewed")
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, 2.0, -0.25, 1e16, 0.1]),
    st.sampled_from(["1", "a", "b"]),
    st.just([1]),
)
CONDITIONS: list[Rule] = [
    parse_rule(d)
    for d in (
        BOUGHT_EVER,
        {**BOUGHT_7, "window": {"last_days": 1}},
        BOUGHT_7,
        BOUGHT_MARCH,
        {"type": "event", "event": "Viewed", "window": {"last_days": 3}},
        {
            **BOUGHT_7,
            "where": {"type": "property", "property": "price", "operator": "gt", "value": 0},
        },
        *(agg(f, w) for f in ("sum", "avg", "min", "max", "count_distinct") for w in WINDOWS),
        {"type": "occurrence", "event": "Viewed", "which": "first"} | OCCURS,
        {"type": "occurrence", "event": "Viewed", "which": "last"} | OCCURS,
    )
]
SPECS = aggregates.specs_for(CONDITIONS)


def events_strategy() -> st.SearchStrategy[list[TrackEvent]]:
    # Whole hours (give or take a microsecond) so that events often sit on window edges.
    one = st.builds(
        lambda name, hours, jitter, value: event(
            name, NOW - timedelta(hours=hours, microseconds=jitter), price=value
        ),
        st.sampled_from(NAMES),
        # ... and on the from/to windows' edges (NOW is 12:00 on 15 March).
        st.one_of(st.integers(-48, 40 * 24), st.sampled_from([-12, 14 * 24 + 12])),
        st.sampled_from([0, 0, 0, 1, -1]),
        VALUES,
    )
    return st.lists(one, max_size=25)


def in_window(t: datetime, window: Window | None, now: datetime) -> bool:
    if window is None:
        return True
    if window.days is not None:
        return t >= now - timedelta(days=window.days)
    assert window.start is not None and window.end is not None
    return window.start <= t < window.end


def scan(condition: Rule, events: list[TrackEvent], now: datetime) -> Any:
    """What a condition reads, straight from the events (the reference)."""
    assert isinstance(condition, Performed | Aggregate | Occurrence)
    window = None if isinstance(condition, Occurrence) else condition.window
    chosen = [
        e
        for e in events
        if e.name == condition.event
        and values.matches(condition.where, e.properties)
        and in_window(e.timestamp, window, now)
    ]
    if isinstance(condition, Performed):
        return len(chosen)
    if isinstance(condition, Occurrence):
        times = [e.timestamp for e in chosen]
        return (min if condition.which == "first" else max)(times) if times else None
    found: list[Any] = [e.properties.get(condition.property) for e in chosen]
    numbers = [v for v in found if values.is_number(v)]
    match condition.function:
        case "count_distinct":
            scalars = [v for v in found if isinstance(v, bool | str) or values.is_number(v)]
            return len({(type(v) if isinstance(v, bool | str) else "n", v) for v in scalars})
        case "sum":
            return round(math.fsum(numbers), 6)
        case "avg":
            return round(math.fsum(numbers) / len(numbers), 6) if numbers else None
    return (min if condition.function == "min" else max)(numbers) if numbers else None


def answers(state: dict[str, Any], now: datetime) -> list[Any]:
    out: list[Any] = []
    for condition in CONDITIONS:
        if isinstance(condition, Performed):
            out.append(aggregates.count(state, condition, now))
        elif isinstance(condition, Aggregate):
            out.append(aggregates.aggregate(state, condition, now))
        else:
            assert isinstance(condition, Occurrence)
            out.append(aggregates.occurred(state, condition))
    return out


@settings(max_examples=150, deadline=None)
@given(events=events_strategy(), data=st.data())
def test_incremental_state_with_prunes_equals_build_and_a_full_scan(
    events: list[TrackEvent], data: st.DataObject
) -> None:
    arrival = data.draw(st.permutations(events))
    state: dict[str, Any] = {}
    now = NOW - timedelta(days=3)
    for item in arrival:
        now += timedelta(hours=data.draw(st.integers(0, 12)))
        aggregates.observe(state, SPECS, item, now=now)
        if data.draw(st.booleans()):
            aggregates.prune(state, SPECS, now)
        state = roundtrip(state)
    built = aggregates.build(SPECS, events, now)
    # The instants an event sits on a window's edge are where an off-by-one would show.
    edges = [
        e.timestamp + timedelta(days=n) + d for e in events for n in (1, 3, 7) for d in (0 * US, US)
    ]
    probes = data.draw(st.lists(st.sampled_from(edges), max_size=4)) if edges else []
    laters = {now, now + timedelta(hours=13), now + timedelta(days=5), *probes}
    for later in sorted(t for t in laters if t >= now):
        expected = [scan(c, events, later) for c in CONDITIONS]
        assert answers(state, later) == expected
        assert answers(built, later) == expected
        aggregates.prune(state, SPECS, later)
        assert answers(state, later) == expected
    assert aggregates.incomplete(state, SPECS) == set()


@settings(max_examples=100, deadline=None)
@given(mine=events_strategy(), theirs=events_strategy(), prune=st.booleans())
def test_combined_states_equal_the_state_of_both_timelines(
    mine: list[TrackEvent], theirs: list[TrackEvent], prune: bool
) -> None:
    into = aggregates.build(SPECS, mine, NOW)
    aggregates.combine(into, roundtrip(aggregates.build(SPECS, theirs, NOW)))
    if prune:
        aggregates.prune(into, SPECS, NOW)
    for later in (NOW, NOW + timedelta(days=2)):
        assert answers(into, later) == [scan(c, mine + theirs, later) for c in CONDITIONS]


@settings(max_examples=150, deadline=None)
@given(events=events_strategy())
def test_window_values_are_the_values_from_each_exit_on(events: list[TrackEvent]) -> None:
    state = aggregates.build(SPECS, events, NOW)
    for condition in CONDITIONS:
        if not isinstance(condition, Performed | Aggregate):
            continue
        found = aggregates.window_values(state, condition, NOW)
        assert [moment for moment, _ in found] == sorted({moment for moment, _ in found})
        for moment, value in found:
            at = aggregates.instant(moment)
            assert at > NOW
            assert value == scan(condition, events, at)
            # ... and it is a real exit: just before it, the window held more.
            assert scan(condition, events, at - US) != value or isinstance(condition, Aggregate)


@settings(max_examples=150, deadline=None)
@given(events=events_strategy())
def test_count_drops_are_the_first_exits_at_or_below_each_count(
    events: list[TrackEvent],
) -> None:
    state = aggregates.build(SPECS, events, NOW)
    for condition in CONDITIONS:
        if not isinstance(condition, Performed):
            continue
        exits = aggregates.window_values(state, condition, NOW)
        now_counted = aggregates.count(state, condition, NOW)
        for target in range(-1, 8):
            expected = next(((t, n) for t, n in exits if n <= target), None)
            if now_counted <= target:
                expected = None  # no drop to come: it is there already
            found = aggregates.count_drops(state, condition, NOW, [target])
            assert found == ([] if expected is None else [expected])


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-9, minutes=-30))]),
    )
)
def test_micros_is_exact_and_instant_inverts_it(moment: datetime) -> None:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    us = aggregates.micros(moment)
    assert us == (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert aggregates.instant(us) == aware
