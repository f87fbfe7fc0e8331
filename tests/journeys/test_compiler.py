"""The journey compiler: valid graphs become plans; every fault of an invalid one is named
under its node's id, and nothing half-valid gets through."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from clarion.journeys.compiler import InvalidJourney, References, compile_journey

KNOWN = References(
    segments=frozenset({7}),
    templates={11: "email", 12: "sms"},
    channels={21: "email", 22: "webhook"},
)


def abandoned_cart() -> dict[str, Any]:
    """Checkout started, no order within an hour: an email; a day later, another."""
    return {
        "entry": {"frequency": "every_time", "max_active": 3},
        "entry_key": "properties.cart_id",
        "exit_when": [{"event": "Order Completed", "same_key": True}],
        "goal": {"event": "Order Completed", "within_days": 3},
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {
                    "kind": "event",
                    "event": "Checkout Started",
                    "where": {
                        "type": "property",
                        "property": "value",
                        "operator": "gt",
                        "value": 0,
                    },
                },
                "next": "hour",
            },
            {
                "id": "hour",
                "type": "wait",
                "wait": {
                    "kind": "until_event",
                    "event": "Order Completed",
                    "same_key": True,
                    "timeout_seconds": 3600,
                },
                "next": "done",
                "timeout_next": "first",
            },
            {
                "id": "first",
                "type": "action",
                "actions": [{"kind": "send", "template_id": 11}],
                "next": "day",
            },
            {
                "id": "day",
                "type": "wait",
                "wait": {"kind": "duration", "seconds": 86400},
                "next": "vip",
            },
            {
                "id": "vip",
                "type": "condition",
                "branches": [
                    {"when": [["tier eq gold", "tier eq platinum"]], "next": "second"},
                    {"when": {"type": "segment", "segment_id": 7}, "next": "second"},
                ],
                "otherwise": "split",
            },
            {
                "id": "split",
                "type": "split",
                "paths": [{"weight": 1, "next": "second"}, {"weight": 1, "next": "done"}],
                "holdout_percent": 10,
            },
            {
                "id": "second",
                "type": "action",
                "mode": "priority",
                "actions": [
                    {"kind": "send", "template_id": 12},
                    {"kind": "send", "template_id": 11, "channel_id": 21},
                ],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


def faults(graph: Any, known: References = KNOWN) -> dict[str, str]:
    with pytest.raises(InvalidJourney) as raised:
        compile_journey(graph, known)
    assert raised.value.status == 400
    return {error.field: error.message for error in raised.value.errors}


def node(graph: dict[str, Any], node_id: str) -> dict[str, Any]:
    [found] = [n for n in graph["nodes"] if n["id"] == node_id]
    return found


def test_a_valid_graph_compiles_to_a_plan_that_compiles_again_the_same() -> None:
    plan = compile_journey(abandoned_cart(), KNOWN)
    assert plan.start == "start" and plan.trigger.trigger.kind == "event"
    assert plan.successors["hour"] == ("done", "first")
    assert plan.successors["vip"] == ("second", "second", "split")
    assert plan.successors["done"] == ()
    assert set(plan.wheres) == {"nodes.start.trigger.where"}
    document = plan.document()
    assert document["version"] == 1 and document["start"] == "start"
    # The conjunctive form is stored as the rule it means, and reads back the same.
    stored = node(document["graph"], "vip")["branches"][0]["when"]
    assert stored["type"] == "any"
    assert compile_journey(document["graph"], KNOWN).document() == document


def test_shape_faults_are_named_by_node_id() -> None:
    graph = abandoned_cart()
    node(graph, "day")["wait"]["seconds"] = 0
    node(graph, "first")["actions"][0]["template_id"] = "eleven"
    node(graph, "split")["holdout_percent"] = 100
    graph["exit_when"][0]["event"] = ""
    found = faults(graph)
    assert set(found) == {
        "nodes.day.wait.seconds",
        "nodes.first.actions.0.template_id",
        "nodes.split.holdout_percent",
        "exit_when.0.event",
    }


def test_unknown_node_types_and_fields_are_refused() -> None:
    graph = abandoned_cart()
    graph["nodes"].append({"id": "odd", "type": "teleport"})
    node(graph, "done")["colour"] = "red"
    found = faults(graph)
    assert any(field.startswith("nodes.odd") for field in found)
    assert "nodes.done.colour" in found


def test_numbers_given_as_booleans_or_text_are_refused_naming_them() -> None:
    """Pydantic's lax mode would read `true` as 1 and "3600" as 3600."""
    graph = abandoned_cart()
    node(graph, "day")["wait"]["seconds"] = True
    node(graph, "hour")["wait"]["timeout_seconds"] = "3600"
    node(graph, "split")["paths"][0]["weight"] = True
    node(graph, "first")["actions"][0]["template_id"] = True
    found = faults(graph)
    assert {
        "nodes.day.wait.seconds",
        "nodes.hour.wait.timeout_seconds",
        "nodes.split.paths.0.weight",
        "nodes.first.actions.0.template_id",
    } <= found.keys()
    graph = abandoned_cart()
    node(graph, "split")["holdout_percent"] = 12  # a whole number is a number
    compile_journey(graph, KNOWN)


def test_structure_faults_are_all_reported_at_once() -> None:
    graph = abandoned_cart()
    graph["nodes"].append(copy.deepcopy(node(graph, "start")) | {"id": "start-2"})
    node(graph, "first")["next"] = "nowhere"
    node(graph, "split")["paths"][1]["next"] = "start"
    graph["nodes"].append({"id": "island", "type": "exit"})
    graph["nodes"].append({"id": "done", "type": "exit"})
    found = faults(graph)
    assert found["nodes"] == "needs exactly one trigger, has 2"
    assert found["nodes.first.next"] == "no node 'nowhere'"
    assert found["nodes.split.paths.1.next"] == "cannot lead to the trigger"
    assert found["nodes.done.id"] == "is used by another node"
    assert "nodes.island" not in found  # with two triggers, reachability is not judged
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "start-2"]
    found = faults(graph)
    assert found["nodes.island"] == "cannot be reached from the trigger"


def test_a_loop_needs_a_wait() -> None:
    graph = abandoned_cart()
    node(graph, "second")["next"] = "vip"  # vip -> second -> vip, instantly
    assert "is on a loop with no wait" in faults(graph)["nodes.vip"]
    node(graph, "second")["next"] = "day"  # through the day's wait: fine
    plan = compile_journey(graph, KNOWN)
    # The nodes a run may come to again (their actions are keyed per visit).
    assert plan.looping == {"day", "vip", "split", "second"}
    assert compile_journey(abandoned_cart(), KNOWN).looping == frozenset()


def test_event_waits_and_only_they_have_a_timeout_branch() -> None:
    graph = abandoned_cart()
    del node(graph, "hour")["timeout_next"]
    node(graph, "day")["timeout_next"] = "done"
    found = faults(graph)
    assert found["nodes.hour.timeout_next"] == "an event wait needs it"
    assert found["nodes.day.timeout_next"] == "only an event wait has one"


def test_rules_and_conditions_are_checked_where_they_stand() -> None:
    graph = abandoned_cart()
    node(graph, "vip")["branches"][0]["when"] = {
        "type": "trait", "trait": "tier", "operator": "like", "value": "gold"
    }  # fmt: skip
    node(graph, "vip")["branches"][1]["when"] = [["tier huge 3"]]
    node(graph, "start")["trigger"]["where"] = {"type": "trait", "trait": "x", "operator": "eq"}
    graph["exit_when"][0]["where"] = {"type": "property", "property": "total", "operator": "gt"}
    found = faults(graph)
    assert "nodes.vip.branches.0.when.operator" in found
    assert "nodes.vip.branches.1.when.0.0.operator" in found
    assert "nodes.start.trigger.where.type" in found
    assert any(field.startswith("exit_when.0.where") for field in found)


def test_references_must_exist_and_be_of_the_right_kind() -> None:
    graph = abandoned_cart()
    node(graph, "first")["actions"][0]["template_id"] = 99
    node(graph, "second")["actions"][1]["channel_id"] = 22  # a webhook channel for an email
    node(graph, "vip")["branches"][1]["when"] = {"type": "segment", "segment_id": 8}
    node(graph, "first")["actions"].append({"kind": "webhook", "template_id": 11, "channel_id": 21})
    found = faults(graph)
    assert found == {
        "nodes.first.actions.0.template_id": "no such template (or archived)",
        "nodes.first.actions.1.template_id": "is for email, not webhook",
        "nodes.first.actions.1.channel_id": "is not a webhook",
        "nodes.second.actions.1.channel_id": "is a webhook channel, the template email",
        "nodes.vip.branches.1.when": "no segment 8",
    }


def test_segment_and_schedule_triggers_name_a_segment_and_a_valid_cron() -> None:
    graph = abandoned_cart()
    del graph["entry_key"], graph["exit_when"]
    del node(graph, "hour")["wait"]["same_key"]
    graph["entry"]["max_active"] = 1  # without a key: one live run of a profile at a time
    node(graph, "start")["trigger"] = {"kind": "schedule", "cron": "0 9 * * 1", "segment_id": 7}
    compile_journey(graph, KNOWN)
    node(graph, "start")["trigger"] = {"kind": "schedule", "cron": "every monday", "segment_id": 3}
    found = faults(graph)
    assert set(found) == {"nodes.start.trigger.cron", "nodes.start.trigger.segment_id"}
    node(graph, "start")["trigger"] = {"kind": "segment_entered", "segment_id": 7}
    compile_journey(graph, KNOWN)


def test_entry_keys_come_from_an_event_trigger() -> None:
    graph = abandoned_cart()
    graph["entry_key"] = "cart_id"
    assert faults(graph)["entry_key"] == "must name a property: properties.<name>"
    del graph["entry_key"]
    found = faults(graph)
    assert found == {
        "nodes.hour.wait.same_key": "needs an entry_key",
        "exit_when.0.same_key": "needs an entry_key",
        "entry.max_active": (
            "above 1 needs an entry_key: without one a profile has one live run at a time"
        ),
    }
    graph = abandoned_cart()
    node(graph, "start")["trigger"] = {"kind": "date", "trait": "birthday", "offset_days": -3}
    assert faults(graph)["entry_key"] == "only an event trigger gives a key"


def test_entry_rules_need_a_period_exactly_when_once_per_period() -> None:
    graph = abandoned_cart()
    graph["entry"] = {"frequency": "once_per_period"}
    assert "entry" in faults(graph)
    graph["entry"] = {"frequency": "once_per_period", "period_days": 30}
    compile_journey(graph, KNOWN)


@pytest.mark.parametrize("raw", [None, [], "graph", {"nodes": "x"}, {"nodes": []}])
def test_what_is_no_graph_at_all_is_refused(raw: Any) -> None:
    assert faults(raw)


def trait_graph(traits: dict[str, Any]) -> dict[str, Any]:
    """A trigger, a trait action setting `traits`, an exit."""
    return {
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "tag",
            },
            {
                "id": "tag",
                "type": "action",
                "actions": [{"kind": "update_traits", "traits": traits}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    }


def test_trait_actions_set_neither_identities_nor_what_no_profile_keeps() -> None:
    traits = {"k" * 300: 1, "": 2, "email": "not-an-email", "user_id": "hijack"}
    with pytest.raises(InvalidJourney) as raised:
        compile_journey(trait_graph(traits), KNOWN)
    at = "nodes.tag.actions.0.traits"
    assert [(error.field, error.message) for error in raised.value.errors] == [
        (at, f"the trait name {'k' * 20!r}... is longer than 255 characters"),
        (at, "a trait name cannot be empty"),
        (f"{at}.email", "is not an email address"),
        (f"{at}.user_id", "is the profile's identity: a journey cannot set it"),
    ]
    for name in ("anonymousId", "ID", "User Id"):
        assert f"{at}.{name}" in faults(trait_graph({name: "x"}))
    bad_values = {
        "phone": "call me",
        "huge": 2**64,
        "deep": {"list": [float("inf")]},
        "nul": "a\x00b",
        "nested": [[[1]], {"x": -(2**63) - 1}],
    }
    assert set(faults(trait_graph(bad_values))) == {f"{at}.{key}" for key in bad_values}
    fine = {
        "k" * 255: 1,
        "email": " Ann@Example.com ",
        "phone": "+33 6 12 34 56 78",
        "plan": {"tier": "gold", "seats": 2**63 - 1, "ratio": 0.5, "tags": ["a", None, True]},
        "greeting": "Hello {{ profile.traits.name }}",  # a template: checked once rendered
        "user": "ann",
    }
    compile_journey(trait_graph(fine), KNOWN)
    # A plan stored before these checks is read back as it is.
    compile_journey(trait_graph(traits), None)


def test_more_than_one_live_run_needs_an_entry_key() -> None:
    graph = abandoned_cart()
    compile_journey(graph, KNOWN)  # max_active 3, per cart
    del graph["entry_key"], graph["exit_when"]
    del node(graph, "hour")["wait"]["same_key"]
    found = faults(graph)
    assert set(found) == {"entry.max_active"} and "needs an entry_key" in found["entry.max_active"]
    compile_journey(graph, None)  # a stored plan: read back as it is
    graph["entry"]["max_active"] = 1
    compile_journey(graph, KNOWN)
    # A date trigger keys its runs by date: a profile may have a run per date.
    graph["entry"]["max_active"] = 2
    node(graph, "start")["trigger"] = {"kind": "date", "trait": "renewal", "yearly": False}
    compile_journey(graph, KNOWN)


def test_publishing_reads_numbers_and_ids_strictly() -> None:
    for loose in ("5", True, 5.0):
        graph = abandoned_cart()
        node(graph, "day")["wait"]["seconds"] = loose
        node(graph, "first")["actions"][0]["template_id"] = 11.0
        node(graph, "hour")["wait"]["same_key"] = "true"
        graph["entry"]["max_active"] = "3"
        assert set(faults(graph)) == {
            "nodes.day.wait.seconds",
            "nodes.first.actions.0.template_id",
            "nodes.hour.wait.same_key",
            "entry.max_active",
        }
    graph = abandoned_cart()
    node(graph, "split")["holdout_percent"] = 10  # a whole number is a number
    compile_journey(graph, KNOWN)


def test_a_cron_that_never_fires_is_refused() -> None:
    graph = abandoned_cart()
    del graph["entry_key"], graph["exit_when"]
    del node(graph, "hour")["wait"]["same_key"]
    graph["entry"]["max_active"] = 1
    for cron in ("0 0 31 2 *", "0 0 30 2 *", "*/5 * 31 4,6,9,11 *"):
        node(graph, "start")["trigger"] = {"kind": "schedule", "cron": cron, "segment_id": 7}
        assert faults(graph) == {"nodes.start.trigger.cron": "never fires"}
    for cron in ("0 0 29 2 *", "0 0 31 2 1", "0 9 31 * *"):  # leap days; Mondays; 31sts
        node(graph, "start")["trigger"] = {"kind": "schedule", "cron": cron, "segment_id": 7}
        compile_journey(graph, KNOWN)


def test_a_graph_past_a_journeys_size_is_refused_under_graph() -> None:
    graph = abandoned_cart()
    node(graph, "first")["description"] = "x" * (300 * 1024)
    found = faults(graph)
    assert set(found) == {"graph"} and "bytes" in found["graph"]
    graph = abandoned_cart()
    graph["nodes"] += [{"id": f"n{n}", "type": "exit"} for n in range(200)]
    assert "nodes" in faults(graph)["graph"]
