"""The segment index: equal conditions of different segments are one node, so that an
evaluation reads each once per profile, and sharing them changes no answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clarion.segments import aggregates, predicate
from clarion.segments.aggregates import TrackEvent
from clarion.segments.catalog import LiveSegment, SegmentIndex
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import RuleContext, walk

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
BOUGHT = {"type": "event", "event": "Order Completed", "window": {"last_days": 30}}
NEWSLETTER = {"type": "trait", "trait": "newsletter", "operator": "eq", "value": True}
ONE = {"type": "trait", "trait": "newsletter", "operator": "eq", "value": 1}
PRO = {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}
RULES: dict[int, dict[str, Any]] = {
    1: BOUGHT,
    2: {"type": "all", "conditions": [BOUGHT, PRO]},
    3: {"type": "not", "condition": {"type": "any", "conditions": [BOUGHT, NEWSLETTER]}},
    4: {"type": "all", "conditions": [PRO, ONE]},
    5: {"type": "all", "conditions": [BOUGHT, PRO]},
}


def index() -> SegmentIndex:
    return SegmentIndex.build(
        LiveSegment(segment_id, f"S{segment_id}", 1, parse_rule(rule))
        for segment_id, rule in RULES.items()
    )


def test_equal_conditions_of_different_segments_are_one_node() -> None:
    built = index()
    bought = built.segments[1].rule
    for segment_id in (2, 3, 5):
        assert any(node is bought for node in walk(built.segments[segment_id].rule))
    assert built.segments[5].rule is built.segments[2].rule  # whole rules too
    pro = built.segments[2].rule.conditions[1]  # type: ignore[union-attr]
    assert built.segments[4].rule.conditions[0] is pro  # type: ignore[union-attr]
    # `true` and 1 are equal in Python, not in a rule: never shared.
    newsletter = built.segments[3].rule.condition.conditions[1]  # type: ignore[union-attr]
    one = built.segments[4].rule.conditions[1]  # type: ignore[union-attr]
    assert newsletter is not one and newsletter.value is True and one.value == 1


def test_shared_conditions_answer_as_the_segments_own() -> None:
    built = index()
    order = TrackEvent("Order Completed", NOW - timedelta(days=3), {})
    for traits, events in (
        ({"plan": "pro", "newsletter": True}, [order]),
        ({"plan": "pro", "newsletter": 1}, []),
        ({"plan": "free", "newsletter": True}, []),
    ):
        state = aggregates.build(built.specs, events, NOW)
        facts = predicate.ProfileFacts(traits, {}, None, None, state)
        context = RuleContext(now=NOW, segments={})
        evaluation = predicate.Evaluation(facts, context)
        for segment_id, rule in RULES.items():
            expected = predicate.evaluate(parse_rule(rule), facts, context)
            assert evaluation.holds(built.segments[segment_id].rule) is expected
            assert evaluation.next_change_us(built.segments[segment_id].rule) == (
                predicate.Evaluation(facts, context).next_change_us(parse_rule(rule))
            )
