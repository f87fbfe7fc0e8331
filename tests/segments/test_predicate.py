"""The in-memory compiler: every node's meaning (segments/README.md), explanations, and when
an answer changes with time alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.segments import aggregates
from clarion.segments.aggregates import TrackEvent
from clarion.segments.parsing import parse_rule
from clarion.segments.predicate import (
    ProfileFacts,
    evaluate,
    explain,
    next_change,
    time_conditions,
)
from clarion.segments.rules import (
    All,
    Any_,
    Compare,
    InSegment,
    Not,
    Rfm,
    RfmThresholds,
    Rule,
    RuleContext,
    to_json,
)

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
DAY = timedelta(days=1)
MISSING = object()


def facts(
    *rules: Rule,
    traits: dict[str, Any] | None = None,
    computed: dict[str, Any] | None = None,
    first_seen: datetime | None = None,
    last_seen: datetime | None = None,
    events: Sequence[TrackEvent] = (),
) -> ProfileFacts:
    state = aggregates.build(aggregates.specs_for(rules), events, NOW)
    return ProfileFacts(traits or {}, computed or {}, first_seen, last_seen, state)


def holds(rule: Rule | dict[str, Any], now: datetime = NOW, **kwargs: Any) -> bool:
    node = parse_rule(rule) if isinstance(rule, dict) else rule
    segments = kwargs.pop("segments", {})
    profile = facts(node, *segments.values(), **kwargs)
    return evaluate(node, profile, RuleContext(now=now, segments=segments))


def bought(hours_ago: float, **properties: Any) -> TrackEvent:
    return TrackEvent("Bought", NOW - timedelta(hours=hours_ago), properties)


# --- Traits ---------------------------------------------------------------------------------

# fmt: off
COMPARISONS = [
    ("eq", 1, 1.0, True), ("eq", 1, "1", False), ("eq", "1", 1, False), ("eq", True, 1, False),
    ("eq", 1, True, False), ("eq", False, False, True), ("eq", "a", "A", False),
    ("eq", "a", MISSING, False), ("eq", "a", None, False), ("eq", 1, [1], False),
    ("neq", "a", MISSING, True), ("neq", "a", None, True), ("neq", "a", "a", False),
    ("neq", 1, 1.0, False), ("neq", 1, True, True),
    ("gt", 1, 2, True), ("gt", 1, "2", False), ("gt", "1", 2, False), ("gt", 0, True, False),
    ("gt", "a", "é", True),
    ("gte", 1, 1.0, True),
    ("lt", "a", "B", True),  # by code point: "B" < "a"
    ("lte", 5, MISSING, False),
    ("between", [1, 3], 3, True), ("between", [1, 3], 1.0, True), ("between", [1, 3], 3.5, False),
    ("between", ["a", "c"], "b", True), ("between", [1, 3], "2", False),
    ("between", [0, 3], True, False),
    ("in", [1, "a", True], 1.0, True), ("in", [1], True, False), ("in", ["1"], 1, False),
    ("in", [1], MISSING, False),
    ("not_in", [1], MISSING, True), ("not_in", [1, 2], 2.0, False), ("not_in", [1], "1", True),
    ("contains", "ell", "hello", True), ("contains", "L", "hello", False),
    ("contains", 1, "a1", False), ("contains", 1, [2, 1.0], True), ("contains", "1", [1], False),
    ("contains", True, [1], False), ("contains", "a", {"a": 1}, False),
    ("contains", "a", MISSING, False),
    ("starts_with", "he", "hello", True), ("starts_with", "He", "hello", False),
    ("starts_with", "1", 12, False),
    ("exists", None, MISSING, False), ("exists", None, None, False), ("exists", None, False, True),
    ("exists", None, 0, True), ("exists", None, "", True), ("exists", None, [], True),
]
# fmt: on


@pytest.mark.parametrize(("op", "value", "actual", "expected"), COMPARISONS)
def test_trait_comparisons(op: str, value: Any, actual: Any, expected: bool) -> None:
    rule = Compare("trait", "x", op, tuple(value) if isinstance(value, list) else value)  # type: ignore[arg-type]
    traits = {} if actual is MISSING else {"x": actual}
    assert holds(rule, traits=traits) is expected


def test_dotted_keys_follow_objects_only() -> None:
    traits = {"a": {"b": {"c": 1}}, "s": "text", "l": [{"b": 1}], "n": {"b": None}}
    assert holds({"type": "trait", "trait": "a.b.c", "operator": "eq", "value": 1}, traits=traits)
    assert holds({"type": "trait", "trait": "a.b", "operator": "exists"}, traits=traits)
    for path in ("a.x", "s.b", "l.0.b", "l.b", "n.b", "a.b.c.d"):
        rule = {"type": "trait", "trait": path, "operator": "exists"}
        assert not holds(rule, traits=traits), path


def date_rule(op: str, days: int, trait: str = "d") -> Compare:
    # A node, not a document: 0 days (which the reader refuses) shows single-day edges.
    return Compare("trait", trait, op, days)  # type: ignore[arg-type]


def test_calendar_days_count_in_the_profile_time_zone() -> None:
    late = datetime(2026, 3, 15, 23, 30, tzinfo=UTC)  # already 16 March in Tokyo
    rule = date_rule("within_last_days", 1)
    tokyo = {"d": "2026-03-16", "timezone": "Asia/Tokyo"}
    assert holds(rule, late, traits=tokyo)
    for zone in (None, "UTC", "Mars/Olympus", "", "../etc", 9, "asia/tokyo"):
        assert not holds(rule, late, traits={"d": "2026-03-16", "timezone": zone}), zone
    assert holds(rule, late, traits={"d": "2026-03-15", "timezone": "Mars/Olympus"})


def test_within_last_days_and_more_than_days_ago_edges() -> None:
    today = NOW.date()
    for n in (1, 7, 400):
        edge = (today - timedelta(days=n)).isoformat()
        before = (today - timedelta(days=n + 1)).isoformat()
        assert holds(date_rule("within_last_days", n), traits={"d": edge})
        assert not holds(date_rule("within_last_days", n), traits={"d": before})
        assert not holds(date_rule("more_than_days_ago", n), traits={"d": edge})
        assert holds(date_rule("more_than_days_ago", n), traits={"d": before})
    tomorrow = (today + DAY).isoformat()
    assert not holds(date_rule("within_last_days", 3), traits={"d": tomorrow})
    assert holds(date_rule("within_last_days", 3), traits={"d": today.isoformat()})


def test_dates_are_read_by_pattern_and_compared_as_text() -> None:
    rule = date_rule("within_last_days", 30)
    assert holds(rule, traits={"d": "2026-03-10T23:00:00-05:00"})
    assert holds(rule, traits={"d": "2026-02-30"})  # no such day, but between as text
    assert holds(date_rule("more_than_days_ago", 14), traits={"d": "2026-02-30"})
    for value in ("2026-3-10", 20260310, "abcd-ef-gh", "٢٠٢٦-03-10", " 2026-03-10", True, None):
        assert not holds(rule, traits={"d": value}), value
        assert not holds(date_rule("more_than_days_ago", 1), traits={"d": value}), value


ANNIVERSARIES = [
    ("2027-02-28", "1992-02-29", 0, True),  # 29 February falls on 28 February ...
    ("2028-02-28", "1992-02-29", 0, False),  # ... in other years only
    ("2028-02-29", "1992-02-29", 0, True),
    ("2028-02-27", "1992-02-29", 1, False),
    ("2028-02-27", "1992-02-29", 2, True),
    ("2027-02-27", "1992-02-29", 1, True),
    ("2028-02-29", "1990-02-28", 0, False),
    ("2028-02-29", "1990-02-28", 365, True),
    ("2028-02-29", "1990-02-28", 364, False),
    ("2026-12-30", "2000-01-02", 3, True),
    ("2026-12-30", "2000-01-02", 2, False),
    ("2026-03-15", "1980-03-15", 0, True),
    ("2026-03-16", "1980-03-15", 363, False),
    ("2026-03-16", "1980-03-15", 364, True),
    ("2026-03-15", "2000-02-30", 36600, False),
    ("2026-03-15", "2000-13-01", 36600, False),
    ("2026-03-15", "2000-00-10", 36600, False),
    ("2026-03-15", "2000-04-31", 36600, False),
    ("2026-03-15", "2000-04-30T10:00:00Z", 365, True),
]


@pytest.mark.parametrize(("today", "value", "days", "expected"), ANNIVERSARIES)
def test_anniversaries(today: str, value: str, days: int, expected: bool) -> None:
    now = datetime.fromisoformat(today).replace(hour=12, tzinfo=UTC)
    rule = date_rule("anniversary_within_days", days)
    assert holds(rule, now, traits={"d": value}) is expected


def falls_on(month: int, day: int, on: date) -> bool:
    if (on.month, on.day) == (month, day):
        return True
    leap = on.year % 4 == 0 and (on.year % 100 != 0 or on.year % 400 == 0)
    return (month, day) == (2, 29) and (on.month, on.day) == (2, 28) and not leap


@settings(max_examples=300, deadline=None)
@given(
    today=st.dates(date(2020, 1, 1), date(2032, 12, 31)),
    month=st.integers(0, 13),
    day=st.one_of(st.integers(0, 32), st.just(29)),
    days=st.one_of(st.integers(0, 40), st.integers(300, 400)),
)
def test_anniversary_equals_counting_the_days(today: date, month: int, day: int, days: int) -> None:
    text = f"1996-{month:02d}-{day:02d}"
    now = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
    expected = any(falls_on(month, day, today + timedelta(days=k)) for k in range(days + 1))
    assert holds(date_rule("anniversary_within_days", days), now, traits={"d": text}) is expected


# --- Times of the profile -------------------------------------------------------------------


def seen(op: str, value: Any, attribute: str = "last_seen_at") -> dict[str, Any]:
    return {"type": "attribute", "attribute": attribute, "operator": op, "value": value}


def test_attribute_times() -> None:
    t = NOW - timedelta(days=7)
    assert holds(seen("within_last_days", 7), last_seen=t)
    assert not holds(seen("within_last_days", 7), last_seen=t - US)
    assert not holds(seen("more_than_days_ago", 7), last_seen=t)
    assert holds(seen("more_than_days_ago", 7), last_seen=t - US)
    assert holds(seen("before", "2026-03-08T12:00:00.000001Z"), last_seen=t)
    assert not holds(seen("before", "2026-03-08T12:00:00Z"), last_seen=t)
    assert not holds(seen("after", "2026-03-08T12:00:00Z"), last_seen=t)
    assert holds(seen("after", "2026-03-08", "first_seen_at"), first_seen=t)
    assert holds(seen("within_last_days", 7), last_seen=t.replace(tzinfo=None))  # naive: UTC
    for op, value in (("within_last_days", 7), ("more_than_days_ago", 7), ("after", "2000-01-01")):
        assert not holds(seen(op, value))  # never seen


# --- Events ---------------------------------------------------------------------------------


def performed(op: str, count: int, **extra: Any) -> dict[str, Any]:
    return {"type": "event", "event": "Bought", "operator": op, "count": count, **extra}


def test_event_counts() -> None:
    two = [bought(1), bought(30)]
    cases = [("gte", 2, True), ("eq", 2, True), ("neq", 2, False), ("gt", 2, False)]
    cases += [("lt", 3, True), ("lte", 1, False)]
    for op, count, expected in cases:
        assert holds(performed(op, count), events=two) is expected, (op, count)
    assert holds(performed("eq", 0))
    assert not holds(performed("gte", 1))
    assert holds(performed("eq", 1, window={"last_days": 1}), events=two)
    assert not holds(performed("gte", 1), events=[TrackEvent("Viewed", NOW, {})])


def test_event_where_filters_use_property_semantics() -> None:
    where = {
        "type": "not",
        "condition": {"type": "property", "property": "price", "operator": "gt", "value": 10},
    }
    events = [bought(1, price=20), bought(2, price="30"), bought(3), bought(4, price=True)]
    assert holds(performed("eq", 3, where=where), events=events)


def aggregate(function: str, op: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "aggregate",
        "event": "Bought",
        "property": "price",
        "function": function,
        "operator": op,
        "value": value,
        **extra,
    }


def test_aggregates() -> None:
    events = [bought(1, price=0.1), bought(2, price=0.2), bought(3, price="7"), bought(4)]
    assert holds(aggregate("sum", "eq", 0.3), events=events)
    assert holds(aggregate("avg", "eq", 0.15), events=events)
    assert holds(aggregate("max", "between", [0.2, 0.2]), events=events)
    assert holds(aggregate("count_distinct", "eq", 3), events=events)
    assert holds(
        aggregate("sum", "eq", 0.1, window={"last_days": 1}),
        events=[bought(25, price=1), *events[:1]],
    )
    assert holds(aggregate("sum", "eq", 0))
    assert holds(aggregate("count_distinct", "lt", 1))
    for function in ("avg", "min", "max"):
        assert not holds(aggregate(function, "neq", 5))  # of nothing: false, even for neq
        assert not holds(aggregate(function, "neq", 5), events=[bought(1, price="5")])


def occurrence(which: str, op: str, value: Any) -> dict[str, Any]:
    return {"type": "occurrence", "event": "Bought", "which": which, "operator": op, "value": value}


def test_occurrences() -> None:
    events = [bought(24 * 10), bought(24 * 2)]
    assert holds(occurrence("last", "within_last_days", 2), events=events)
    assert not holds(occurrence("first", "within_last_days", 9), events=events)
    assert holds(occurrence("first", "more_than_days_ago", 9), events=events)
    assert holds(occurrence("first", "before", "2026-03-06"), events=events)
    assert not holds(occurrence("last", "after", "2026-03-13T12:00:00Z"), events=events)
    for op, value in (("more_than_days_ago", 1), ("before", "2100-01-01")):
        assert not holds(occurrence("last", op, value))  # never performed


# --- Segments and RFM -----------------------------------------------------------------------


def test_segment_references_are_inlined() -> None:
    vip = parse_rule(performed("gte", 2))
    assert holds(InSegment(1), segments={1: vip}, events=[bought(1), bought(2)])
    assert not holds(InSegment(1), segments={1: vip}, events=[bought(1)])
    assert not holds(InSegment(2), segments={1: vip})
    assert holds(Not(InSegment(2)), segments={1: vip})
    # A cycle (refused on save) ends at the depth limit instead of recursing forever.
    assert not holds(InSegment(1), segments={1: InSegment(2), 2: Any_((InSegment(1),))})


THRESHOLDS = RfmThresholds(
    currency="USD",
    recency=(*(datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3)), NOW),
    frequency=(1, 2, 4, 8),
    monetary=(1000, 5000, 10_000, 50_000),
)


def rfm(rule: Rfm, computed: dict[str, Any], thresholds: RfmThresholds | None = THRESHOLDS) -> bool:
    return evaluate(rule, facts(rule, computed=computed), RuleContext(NOW, rfm=thresholds))


def test_rfm_scores() -> None:
    buyer = {"orders": 2, "last_order_at": "2026-02-15T10:00:00+00:00", "revenue": {"USD": 6000}}
    # recency: after 2 boundaries; frequency: 2 is not above 2; monetary: above 2.
    assert rfm(Rfm(recency=(3,), frequency=(2,), monetary=(3,)), buyer)
    assert not rfm(Rfm(recency=(4, 5)), buyer)
    assert rfm(Rfm(frequency=(1, 2), monetary=()), buyer)
    assert rfm(Rfm(monetary=(1,)), {**buyer, "revenue": {"EUR": 99_999}})
    assert rfm(Rfm(recency=(3,)), {**buyer, "last_order_at": "2026-02-15T10:00:00"})
    assert not rfm(Rfm(frequency=(1, 2, 3, 4, 5)), {**buyer, "orders": 0})
    assert not rfm(Rfm(frequency=(1, 2, 3, 4, 5)), {})
    assert not rfm(Rfm(frequency=(1, 2, 3, 4, 5)), buyer, None)
    empty = RfmThresholds("USD", (), (), ())
    assert not rfm(Rfm(frequency=(1, 2, 3, 4, 5)), buyer, empty)


def test_groups() -> None:
    yes = parse_rule({"type": "trait", "trait": "x", "operator": "exists"})
    no = Not(yes)
    traits = {"x": 1}
    assert holds(All(()), traits=traits) and not holds(Any_(()), traits=traits)
    assert holds(All((yes, Any_((no, yes)))), traits=traits)
    assert not holds(All((yes, no)), traits=traits)


# --- Explain --------------------------------------------------------------------------------


def test_explain_mirrors_the_rule_with_answers_and_observed_values() -> None:
    rule = parse_rule(
        {
            "type": "all",
            "conditions": [
                {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"},
                performed("gte", 2, window={"last_days": 7}),
                aggregate("avg", "gt", 100),
                {"type": "not", "condition": {"type": "segment", "segment_id": 4}},
                to_json(date_rule("anniversary_within_days", 3, "birthday")),
                seen("after", "2026-01-01"),
            ],
        }
    )
    profile = facts(
        rule,
        traits={"plan": "pro", "birthday": "1990-03-17"},
        events=[bought(1, price=10)],
        last_seen=NOW,
    )
    tree = explain(rule, profile, RuleContext(NOW))
    assert json.loads(json.dumps(tree)) == tree
    assert tree["type"] == "all" and tree["holds"] is False
    trait, count, avg, negation, birthday, last_seen = tree["conditions"]
    assert trait == {
        "type": "trait",
        "trait": "plan",
        "operator": "eq",
        "value": "pro",
        "observed": "pro",
        "holds": True,
    }
    assert count["observed"] == 1 and count["holds"] is False
    assert count["window"] == {"last_days": 7} and count["count"] == 2
    assert avg["observed"] == 10 and avg["holds"] is False and avg["value"] == 100
    assert negation["holds"] is True
    assert negation["condition"] == {
        "type": "segment",
        "segment_id": 4,
        "condition": None,
        "holds": False,
    }
    assert birthday["holds"] is True and birthday["today"] == "2026-03-15"
    assert last_seen["observed"] == "2026-03-15T12:00:00Z" and last_seen["holds"] is True
    assert tree["holds"] == evaluate(rule, profile, RuleContext(NOW))


def test_explain_inlines_segments_and_shows_rfm_scores() -> None:
    inner = Rfm(frequency=(2,))
    computed = {"orders": 2, "last_order_at": "2026-02-15T10:00:00+00:00", "revenue": {}}
    context = RuleContext(NOW, segments={3: inner}, rfm=THRESHOLDS)
    tree = explain(InSegment(3), facts(inner, computed=computed), context)
    assert tree["holds"] is True
    assert tree["condition"]["observed"] == {"recency": 3, "frequency": 2, "monetary": 1}
    none = explain(inner, facts(inner), context)
    assert none["observed"] is None and none["holds"] is False


# --- Next change ----------------------------------------------------------------------------


def change_of(rule: Rule | dict[str, Any], now: datetime = NOW, **kwargs: Any) -> datetime | None:
    """next_change, checked: the answer stands until just before it and changes at it."""
    node = parse_rule(rule) if isinstance(rule, dict) else rule
    segments = kwargs.pop("segments", {})
    profile = facts(node, *segments.values(), **kwargs)
    context = RuleContext(now=now, segments=segments)
    moment = next_change(node, profile, context)
    if moment is not None:
        answer = evaluate(node, profile, context)
        assert moment > now
        assert evaluate(node, profile, replace(context, now=moment - US)) == answer
        assert evaluate(node, profile, replace(context, now=moment)) != answer
    return moment


def test_next_change_when_an_event_leaves_a_window() -> None:
    events = [bought(72), bought(24), bought(2)]
    rule = performed("gte", 2, window={"last_days": 7})
    # Three events, still two after the first leaves; one after the second does.
    assert change_of(rule, events=events) == NOW - timedelta(hours=24) + 7 * DAY + US
    assert change_of(performed("eq", 3, window={"last_days": 7}), events=events) == (
        NOW - timedelta(hours=72) + 7 * DAY + US
    )
    assert (
        change_of(
            aggregate("sum", "gte", 5, window={"last_days": 1}),
            events=[bought(2, price=3), bought(1, price=2), bought(3, price="x")],
        )
        == NOW - timedelta(hours=2) + DAY + US
    )


def test_nothing_changes_with_time_alone() -> None:
    events = [bought(72), bought(24)]
    march = {"from": "2026-03-01", "to": "2026-04-01"}
    assert change_of(performed("gte", 2, window=march), events=events) is None
    assert change_of(performed("gte", 2), events=events) is None
    assert change_of(performed("gte", 1, window={"last_days": 7})) is None
    assert change_of(seen("before", "2026-04-01"), last_seen=NOW) is None
    assert change_of({"type": "trait", "trait": "x", "operator": "exists"}) is None
    assert change_of(Rfm(frequency=(1,))) is None
    # Events leave the window, but the other condition keeps the answer false.
    never = All((parse_rule(performed("gte", 1, window={"last_days": 7})), InSegment(9)))
    assert change_of(never, events=events) is None


def test_next_change_of_profile_and_event_times() -> None:
    t = NOW - 2 * DAY
    assert change_of(seen("within_last_days", 7), last_seen=t) == t + 7 * DAY + US
    assert change_of(seen("more_than_days_ago", 7, "first_seen_at"), first_seen=t) == (
        t + 7 * DAY + US
    )
    assert change_of(seen("within_last_days", 7)) is None
    last = occurrence("last", "within_last_days", 3)
    assert (
        change_of(last, events=[bought(48), bought(30)]) == NOW - timedelta(hours=30) + 3 * DAY + US
    )


def midnight(day: str, zone: str = "UTC") -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def test_next_change_of_calendar_days_at_local_midnight() -> None:
    tokyo = {"timezone": "Asia/Tokyo"}
    today = "2026-03-15"
    rule = date_rule("within_last_days", 3)
    assert change_of(rule, traits={"d": today}) == midnight("2026-03-19")
    assert change_of(rule, traits={"d": today, **tokyo}) == midnight("2026-03-19", "Asia/Tokyo")
    assert change_of(rule, traits={"d": "2026-03-20"}) == midnight("2026-03-20")
    assert change_of(rule, traits={"d": "2026-02-30"}) is None  # long true... and long past
    assert change_of(date_rule("within_last_days", 30), traits={"d": "2026-02-30"}) == (
        midnight("2026-03-31")  # today - 30 is past "2026-02-30" from 1 March on
    )
    assert change_of(date_rule("more_than_days_ago", 3), traits={"d": today}) == midnight(
        "2026-03-19"
    )
    assert change_of(rule, traits={"d": "not a date"}) is None


def test_next_change_of_anniversaries() -> None:
    rule = date_rule("anniversary_within_days", 7)
    assert change_of(rule, traits={"d": "1990-03-25"}) == midnight("2026-03-18")
    assert change_of(rule, traits={"d": "1990-03-15"}) == midnight("2026-03-16")
    assert change_of(rule, traits={"d": "1990-03-15"}, now=NOW + 7 * DAY) == midnight("2027-03-08")
    on_leap_day = datetime(2027, 2, 20, 12, tzinfo=UTC)
    assert change_of(
        date_rule("anniversary_within_days", 3), on_leap_day, traits={"d": "1992-02-29"}
    ) == (midnight("2027-02-25"))
    assert change_of(date_rule("anniversary_within_days", 365), traits={"d": "1990-03-25"}) is None
    assert change_of(rule, traits={"d": "1990-04-31"}) is None
    # Kept by the day of the year and the zone: another year's birthday on the same day
    # changes at the same instant, one in Tokyo at Tokyo's midnight.
    assert change_of(rule, traits={"d": "2001-03-25"}) == midnight("2026-03-18")
    tokyo = {"d": "2001-03-25", "timezone": "Asia/Tokyo"}
    assert change_of(rule, traits=tokyo) == datetime(2026, 3, 17, 15, tzinfo=UTC)


def test_next_change_at_a_midnight_that_does_not_exist() -> None:
    # Havana skips from 00:00 to 01:00 on 8 March 2026: the day starts at 05:00 UTC.
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    rule = date_rule("within_last_days", 1)
    traits = {"d": "2026-03-06", "timezone": "America/Havana"}
    assert change_of(rule, now, traits=traits) == datetime(2026, 3, 8, 5, tzinfo=UTC)


def test_next_change_follows_segment_references() -> None:
    inner = parse_rule(seen("within_last_days", 1))
    t = NOW - timedelta(hours=5)
    assert change_of(Not(InSegment(1)), segments={1: inner}, last_seen=t) == t + DAY + US
    assert change_of(InSegment(2), segments={1: inner}, last_seen=t) is None


def test_time_conditions_are_found_once_through_references() -> None:
    recent = parse_rule(seen("within_last_days", 1))
    window = parse_rule(performed("gte", 2, window={"last_days": 3}))
    inner = All((recent, parse_rule({"type": "trait", "trait": "x", "operator": "exists"})))
    segments = {1: inner, 2: Any_((InSegment(1), window))}
    rule = All((InSegment(1), InSegment(2), Not(window)))
    found = time_conditions(rule, segments)
    # By identity, each once; the trait condition is not one (time does not change it).
    assert [id(node) for node in found] == [id(recent), id(window)]
    assert time_conditions(InSegment(3), segments) == ()


# A family of time-dependent rules, and brute force: no instant before next_change changes
# the answer, and next_change itself does.

LEAVES = [
    d if isinstance(d, Compare) else parse_rule(d)
    for d in (
        performed("gte", 2, window={"last_days": 3}),
        performed("lt", 3, window={"last_days": 1}),
        aggregate("sum", "gte", 4, window={"last_days": 2}),
        aggregate("max", "lt", 3, window={"last_days": 2}),
        seen("within_last_days", 3),
        seen("more_than_days_ago", 2, "first_seen_at"),
        occurrence("last", "within_last_days", 2),
        occurrence("first", "more_than_days_ago", 4),
        date_rule("within_last_days", 2),
        date_rule("more_than_days_ago", 1),
        date_rule("anniversary_within_days", 0),
        date_rule("anniversary_within_days", 3),
        date_rule("anniversary_within_days", 40),
    )
]
# A segment the rules may name: its conditions are some of the family's.
REFERENCED: dict[int, Rule] = {1: Any_((LEAVES[0], Not(LEAVES[8])))}
RULES = st.recursive(
    st.sampled_from([*LEAVES, InSegment(1)]),
    lambda inner: st.one_of(
        st.builds(lambda a, b: All((a, b)), inner, inner),
        st.builds(lambda a, b: Any_((a, b)), inner, inner),
        st.builds(Not, inner),
    ),
    max_leaves=3,
)
ZONES = ["UTC", "Asia/Tokyo", "America/Havana", "Pacific/Kiritimati", "America/St_Johns", "Nope"]


@st.composite
def profiles(draw: st.DrawFn) -> tuple[ProfileFacts, RuleContext]:
    hours = st.integers(-24, 24 * 8)
    events = draw(
        st.lists(st.builds(lambda h, p: bought(h, price=p), hours, st.integers(0, 3)), max_size=6)
    )
    day = draw(st.dates(date(2024, 1, 1), date(2027, 6, 30)))
    text = day.isoformat() if draw(st.booleans()) else f"1996-{day.month:02d}-{day.day:02d}"
    if draw(st.booleans()):
        text = f"{day.year}-02-29"
    traits = {"d": text, "timezone": draw(st.sampled_from(ZONES))}
    moment = st.none() | st.builds(lambda h: NOW - timedelta(hours=h), hours)
    profile = facts(
        *LEAVES, traits=traits, events=events, first_seen=draw(moment), last_seen=draw(moment)
    )
    now = NOW + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
    return profile, RuleContext(now=now, segments=REFERENCED)


def critical(profile: ProfileFacts, context: RuleContext, until: datetime) -> list[datetime]:
    """Instants around which some leaf of the family may change, up to `until`."""
    times = [t for t in (profile.first_seen_at, profile.last_seen_at) if t is not None]
    for entry in profile.aggregates.values():
        times += [aggregates.instant(aggregates._time(item)) for item in entry.get("ev", [])]
    found = {t + n * DAY + d for t in times for n in (1, 2, 3, 4) for d in (0 * US, US, -US)}
    zone = ZoneInfo(profile.traits["timezone"]) if profile.traits["timezone"] != "Nope" else UTC
    day = context.now.astimezone(zone).date()
    while (start := datetime(day.year, day.month, day.day, tzinfo=zone)) < until:
        found |= {start.astimezone(UTC), start - US}
        day += DAY
    return sorted(t for t in found if context.now < t < until)


@settings(max_examples=200, deadline=None)
@given(rule=RULES, profile_context=profiles())
def test_no_change_hides_before_next_change(
    rule: Rule, profile_context: tuple[ProfileFacts, RuleContext]
) -> None:
    profile, context = profile_context
    answer = evaluate(rule, profile, context)
    moment = next_change(rule, profile, context)
    until = moment if moment is not None else context.now + 800 * DAY
    for probe in critical(profile, context, until):
        assert evaluate(rule, profile, replace(context, now=probe)) == answer, probe
    if moment is not None:
        assert evaluate(rule, profile, replace(context, now=moment - US)) == answer
        # Exact, but for the conservative horizon of anniversaries, years ahead.
        changed = evaluate(rule, profile, replace(context, now=moment)) != answer
        assert changed or moment > context.now + 2 * 365 * DAY
