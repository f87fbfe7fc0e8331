"""From a drawn journey graph to the plan the runtime follows, or every reason it cannot be.

`compile_journey` checks, and reports each fault with its node id in the field path
(`nodes.wait-1.wait.seconds`):

- each node's shape (`graph.py`);
- exactly one trigger, node ids unique, every edge to a node that exists, nothing leading
  back into the trigger, every node reachable from it;
- an event wait has a `timeout_next` branch, other nodes none;
- no loop without a wait on it (a loop of instant steps would spin forever);
- branch rules in the segmentation language, `where` conditions as event property
  conditions, a schedule trigger's cron;
- the segments, templates and channels named exist in the workspace (`References`), and a
  channel is of the kind its action needs;
- `entry_key` and `same_key` only where an event trigger gives a key.

Validating and publishing (with `References`) also read the graph strictly (`"5"` is no
number of seconds, `1.0` no id), refuse a graph over `MAX_NODES` nodes or `MAX_GRAPH_BYTES`
(under `graph`), and check what versions published before these checks may hold, so a
stored plan is never refused by them when read back:

- trait actions: names neither empty nor over 255 characters nor the profile's identity
  (`id`, `user_id`, `anonymous_id`, however spelled), values JSON both databases keep
  (64-bit integers, finite numbers, no NUL), an `email` an email address and a `phone` a
  phone number (a templated value is checked once rendered, by the step);
- `entry.max_active` above 1 only with an `entry_key` (or a date trigger, whose dates key
  runs): without a key a profile has one live run at a time;
- a schedule's cron fires at all (`0 0 31 2 *` never does; `0 0 29 2 *` every leap year).

The `Plan` keeps the graph with its rules parsed, each node's successors, and the node
after the trigger; `Plan.document` is what is stored with the journey version.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import CroniterBadDateError, croniter
from pydantic import ValidationError

from clarion.core.documents import MAX_JSON_DEPTH, FaultKind, json_fault
from clarion.core.errors import FieldError, InvalidInput
from clarion.core.jobs.recurring import validate_cron
from clarion.journeys.graph import (
    ActionNode,
    ConditionNode,
    DateTrigger,
    EventTrigger,
    EventWait,
    JourneyGraph,
    Node,
    ScheduleTrigger,
    SegmentTrigger,
    SendAction,
    SplitNode,
    TraitAction,
    TriggerNode,
    WaitNode,
    WebhookAction,
    size_problem,
)
from clarion.messaging import rendering
from clarion.profiles.identity import normalize_email, normalize_phone
from clarion.profiles.transfer import MAX_NAME_LENGTH
from clarion.segments.parsing import RuleError, parse_rule, parse_where
from clarion.segments.rules import Rule, segment_ids, to_json

PLAN_VERSION = 1
ENTRY_KEY_PREFIX = "properties."
# A profile's identities, folded (lower case, no `_`, `-` or spaces): `user_id`, `userId`,
# `anonymous_id`, `id`. Set as traits they would read as someone else's ids.
IDENTITY_TRAITS = frozenset({"id", "userid", "anonymousid"})
# The longest a valid day of a cron waits for its next tick: 29 February, 8 years around 2100.
_CRON_YEARS = 8


@dataclass(frozen=True, slots=True)
class References:
    """What of the workspace a journey may name: segment ids, live templates (id -> their
    channel kind) and channels (id -> kind)."""

    segments: frozenset[int] = frozenset()
    templates: Mapping[int, str] = field(default_factory=dict)
    channels: Mapping[int, str] = field(default_factory=dict)


class InvalidJourney(InvalidInput):
    """A graph that cannot run; `errors` lists every fault, each under its node's id."""

    code = "invalid-journey"
    title = "Invalid journey"


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled journey: the graph, its parsed rules and its edges."""

    graph: JourneyGraph
    start: str  # the trigger node
    nodes: Mapping[str, Node]
    successors: Mapping[str, tuple[str, ...]]
    branch_rules: Mapping[tuple[str, int], Rule]  # (condition node, branch) -> rule
    wheres: Mapping[str, Rule]  # a field path (`nodes.w.wait.where`) -> its conditions
    looping: frozenset[str] = frozenset()  # nodes on a loop: a run may come to them again

    @property
    def trigger(self) -> TriggerNode:
        """The trigger node."""
        node = self.nodes[self.start]
        assert isinstance(node, TriggerNode)
        return node

    def document(self) -> dict[str, Any]:
        """The plan as JSON, stored with the version: the graph in canonical form (rules
        included) and each node's successors."""
        graph = self.graph.model_dump(mode="json")
        for node in graph["nodes"]:
            for index, branch in enumerate(node.get("branches") or ()):
                branch["when"] = to_json(self.branch_rules[(node["id"], index)])
        return {
            "version": PLAN_VERSION,
            "start": self.start,
            "graph": graph,
            "successors": {node: list(after) for node, after in self.successors.items()},
        }


def compile_journey(raw: Any, references: References | None) -> Plan:
    """The plan of a journey graph (JSON); raises InvalidJourney listing every fault. With
    no `references` (a stored plan, checked when published) what it names is not checked,
    nor what only publishing checks (see the module docstring)."""
    graph = _shaped(raw, strict=references is not None)
    errors: list[FieldError] = []
    nodes: dict[str, Node] = {}
    for node in graph.nodes:
        if node.id in nodes:
            errors.append(FieldError(f"nodes.{node.id}.id", "is used by another node"))
        else:
            nodes[node.id] = node
    triggers = [node for node in graph.nodes if isinstance(node, TriggerNode)]
    if len(triggers) != 1:
        errors.append(FieldError("nodes", f"needs exactly one trigger, has {len(triggers)}"))
    successors = {node.id: tuple(target for _, target in _edges(node)) for node in nodes.values()}
    for node in nodes.values():
        for path, target in _edges(node):
            if target not in nodes:
                errors.append(FieldError(f"nodes.{node.id}.{path}", f"no node {target!r}"))
            elif isinstance(nodes[target], TriggerNode):
                errors.append(FieldError(f"nodes.{node.id}.{path}", "cannot lead to the trigger"))
        errors.extend(_wait_branches(node))
    if len(triggers) == 1:
        reached = _reachable(triggers[0].id, successors)
        errors.extend(
            FieldError(f"nodes.{node_id}", "cannot be reached from the trigger")
            for node_id in nodes
            if node_id not in reached
        )
    errors.extend(_instant_loops(nodes, successors))
    branch_rules, wheres = _rules(graph, errors)
    if references is not None:
        errors.extend(_references(graph, branch_rules, references))
        errors.extend(_limits(graph, triggers))
    errors.extend(_keys(graph, triggers))
    if errors:
        raise InvalidJourney(f"The journey has {len(errors)} problem(s).", errors=errors)
    looping = _looping(successors)
    return Plan(graph, triggers[0].id, nodes, successors, branch_rules, wheres, looping)


def _shaped(raw: Any, *, strict: bool) -> JourneyGraph:
    """The graph read from JSON (strictly: no `"5"` for 5, no `1.0` for an id, and no more
    than a graph's size); InvalidJourney naming every fault."""
    too_big = size_problem(raw) if strict else None
    if too_big is not None:
        raise InvalidJourney("The journey is too big.", errors=[FieldError("graph", too_big)])
    try:
        return JourneyGraph.model_validate(raw, strict=strict)
    except ValidationError as error:
        ids = _raw_ids(raw)
        errors = [
            FieldError(_path(issue["loc"], ids) or "graph", issue["msg"])
            for issue in error.errors(include_url=False)
        ]
        raise InvalidJourney(f"The journey has {len(errors)} problem(s).", errors=errors) from None


def _raw_ids(raw: Any) -> dict[int, str]:
    """Each raw node's id by its position, where it has a usable one."""
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, list):
        return {}
    return {
        index: node["id"]
        for index, node in enumerate(nodes)
        if isinstance(node, dict) and isinstance(node.get("id"), str) and node["id"]
    }


def _path(location: tuple[int | str, ...], ids: Mapping[int, str]) -> str:
    """A pydantic error location as a dotted path, a node named by its id, without the tags
    pydantic puts in for tagged unions (`nodes.w.wait.seconds`, not
    `nodes.1.wait.wait.duration.seconds`)."""
    parts = [str(part) for part in location]
    if len(location) < 2 or location[0] != "nodes" or not isinstance(location[1], int):
        return ".".join(parts)
    kept = ["nodes", ids.get(location[1], parts[1])]
    rest = parts[3:] if parts[2:3] and parts[2] in _NODE_TYPES else parts[2:]
    for index, part in enumerate(rest):
        tagged = (index == 1 and rest[0] in ("trigger", "wait")) or (
            index == 2 and rest[0] == "actions" and rest[1].isdigit()
        )
        if not (tagged and part in _UNION_TAGS):
            kept.append(part)
    return ".".join(kept)


_NODE_TYPES = frozenset({"trigger", "wait", "condition", "split", "action", "exit"})
_UNION_TAGS = frozenset(
    {
        "event",
        "segment_entered",
        "segment_exited",
        "schedule",
        "date",
        "duration",
        "until_time",
        "until_date",
        "until_event",
        "send",
        "webhook",
        "update_traits",
        "emit_event",
    }
)


def _edges(node: Node) -> Iterator[tuple[str, str]]:
    """(field path within the node, target id) of each edge out of the node."""
    if isinstance(node, TriggerNode | ActionNode):
        yield "next", node.next
    elif isinstance(node, WaitNode):
        yield "next", node.next
        if node.timeout_next is not None:
            yield "timeout_next", node.timeout_next
    elif isinstance(node, ConditionNode):
        for index, branch in enumerate(node.branches):
            yield f"branches.{index}.next", branch.next
        yield "otherwise", node.otherwise
    elif isinstance(node, SplitNode):
        for index, path in enumerate(node.paths):
            yield f"paths.{index}.next", path.next


def _wait_branches(node: Node) -> list[FieldError]:
    if not isinstance(node, WaitNode):
        return []
    waits_for_event = isinstance(node.wait, EventWait)
    if waits_for_event and node.timeout_next is None:
        return [FieldError(f"nodes.{node.id}.timeout_next", "an event wait needs it")]
    if not waits_for_event and node.timeout_next is not None:
        return [FieldError(f"nodes.{node.id}.timeout_next", "only an event wait has one")]
    return []


def _reachable(start: str, successors: Mapping[str, tuple[str, ...]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for target in successors.get(stack.pop(), ()):
            if target not in seen and target in successors:
                seen.add(target)
                stack.append(target)
    return seen


def _looping(successors: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """The nodes on a loop: reachable again from one of their successors."""
    reach = {node_id: _reachable(node_id, successors) for node_id in successors}
    return frozenset(
        node_id
        for node_id, after in successors.items()
        if any(node_id in reach.get(target, ()) for target in after)
    )


def _instant_loops(
    nodes: Mapping[str, Node], successors: Mapping[str, tuple[str, ...]]
) -> list[FieldError]:
    """A fault on one node of each loop that passes no wait."""
    instant = {
        node_id: tuple(t for t in after if t in nodes and not isinstance(nodes[t], WaitNode))
        for node_id, after in successors.items()
        if not isinstance(nodes[node_id], WaitNode)
    }
    state: dict[str, int] = {}  # 1: on the path being explored, 2: done
    errors: list[FieldError] = []
    for root in instant:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(instant[root]))]
        while stack:
            node_id, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                state[node_id] = 2
                stack.pop()
            elif state.get(target) == 1:
                errors.append(
                    FieldError(f"nodes.{target}", "is on a loop with no wait: add a wait node")
                )
            elif target not in state:
                state[target] = 1
                stack.append((target, iter(instant[target])))
    return errors


def _rules(
    graph: JourneyGraph, errors: list[FieldError]
) -> tuple[dict[tuple[str, int], Rule], dict[str, Rule]]:
    """The branch rules and `where` conditions, parsed; their faults added to `errors`."""
    branch_rules: dict[tuple[str, int], Rule] = {}
    wheres: dict[str, Rule] = {}

    def where(raw: dict[str, Any] | None, path: str) -> None:
        if raw is None:
            return
        try:
            wheres[path] = parse_where(raw)
        except RuleError as error:
            errors.extend(_under(path, "where", error))

    for node in graph.nodes:
        if isinstance(node, ConditionNode):
            for index, branch in enumerate(node.branches):
                path = f"nodes.{node.id}.branches.{index}.when"
                try:
                    branch_rules[(node.id, index)] = parse_rule(branch.when)
                except RuleError as error:
                    errors.extend(_under(path, "rule", error))
        elif isinstance(node, TriggerNode):
            trigger = node.trigger
            if isinstance(trigger, EventTrigger):
                where(trigger.where, f"nodes.{node.id}.trigger.where")
            elif isinstance(trigger, ScheduleTrigger):
                try:
                    validate_cron(trigger.cron)
                except InvalidInput as error:
                    errors.append(FieldError(f"nodes.{node.id}.trigger.cron", error.detail))
        elif isinstance(node, WaitNode) and isinstance(node.wait, EventWait):
            where(node.wait.where, f"nodes.{node.id}.wait.where")
    for index, criterion in enumerate(graph.exit_when):
        where(criterion.where, f"exit_when.{index}.where")
    return branch_rules, wheres


def _under(path: str, root: str, error: RuleError) -> Iterator[FieldError]:
    """A rule's faults with their paths moved from `root` to `path`."""
    for fault in error.errors:
        rest = fault.field[len(root) :] if fault.field.startswith(root) else f".{fault.field}"
        yield FieldError(path + rest, fault.message)


def _references(
    graph: JourneyGraph, branch_rules: Mapping[tuple[str, int], Rule], known: References
) -> Iterator[FieldError]:
    if graph.alerts.channel_id is not None:
        channel = known.channels.get(graph.alerts.channel_id)
        if channel != "webhook":
            problem = "no such channel" if channel is None else "is not a webhook"
            yield FieldError("alerts.channel_id", problem)
    for node in graph.nodes:
        base = f"nodes.{node.id}"
        if isinstance(node, TriggerNode) and isinstance(
            node.trigger, SegmentTrigger | ScheduleTrigger
        ):
            if node.trigger.segment_id not in known.segments:
                yield FieldError(f"{base}.trigger.segment_id", "no such segment")
        elif isinstance(node, ConditionNode):
            for index in range(len(node.branches)):
                rule = branch_rules.get((node.id, index))
                for segment_id in sorted(segment_ids(rule) if rule is not None else ()):
                    if segment_id not in known.segments:
                        yield FieldError(
                            f"{base}.branches.{index}.when", f"no segment {segment_id}"
                        )
        elif isinstance(node, ActionNode):
            for index, action in enumerate(node.actions):
                path = f"{base}.actions.{index}"
                if isinstance(action, SendAction):
                    kind = known.templates.get(action.template_id)
                    if kind is None:
                        yield FieldError(f"{path}.template_id", "no such template (or archived)")
                    if action.channel_id is not None:
                        channel = known.channels.get(action.channel_id)
                        if channel is None:
                            yield FieldError(f"{path}.channel_id", "no such channel")
                        elif kind is not None and channel != kind:
                            yield FieldError(
                                f"{path}.channel_id", f"is a {channel} channel, the template {kind}"
                            )
                elif isinstance(action, TraitAction):
                    yield from _trait_faults(path, action)
                elif isinstance(action, WebhookAction):
                    kind = known.templates.get(action.template_id)
                    if kind is None:
                        yield FieldError(f"{path}.template_id", "no such template (or archived)")
                    elif kind != "webhook":
                        yield FieldError(f"{path}.template_id", f"is for {kind}, not webhook")
                    channel = known.channels.get(action.channel_id)
                    if channel != "webhook":
                        problem = "no such channel" if channel is None else "is not a webhook"
                        yield FieldError(f"{path}.channel_id", problem)


def _keys(graph: JourneyGraph, triggers: list[TriggerNode]) -> Iterator[FieldError]:
    """Entry keys come from an event trigger's properties; `same_key` needs one."""
    event_trigger = len(triggers) == 1 and isinstance(triggers[0].trigger, EventTrigger)
    if graph.entry_key is not None:
        if not event_trigger:
            yield FieldError("entry_key", "only an event trigger gives a key")
        elif not graph.entry_key.startswith(ENTRY_KEY_PREFIX) or graph.entry_key == (
            ENTRY_KEY_PREFIX
        ):
            yield FieldError("entry_key", "must name a property: properties.<name>")
    if graph.entry_key is None:
        for node in graph.nodes:
            if (
                isinstance(node, WaitNode)
                and isinstance(node.wait, EventWait)
                and node.wait.same_key
            ):
                yield FieldError(f"nodes.{node.id}.wait.same_key", "needs an entry_key")
        for index, criterion in enumerate(graph.exit_when):
            if criterion.same_key:
                yield FieldError(f"exit_when.{index}.same_key", "needs an entry_key")


def _limits(graph: JourneyGraph, triggers: list[TriggerNode]) -> Iterator[FieldError]:
    """What only publishing checks of the entry rules and the schedule: more than one live
    run of a profile needs a key to tell them apart; a cron must fire."""
    trigger = triggers[0].trigger if len(triggers) == 1 else None
    if (
        graph.entry.max_active > 1
        and graph.entry_key is None
        and not isinstance(trigger, DateTrigger)  # its dates key the runs
    ):
        yield FieldError(
            "entry.max_active",
            "above 1 needs an entry_key: without one a profile has one live run at a time",
        )
    if isinstance(trigger, ScheduleTrigger) and not _fires(trigger.cron):
        yield FieldError(f"nodes.{triggers[0].id}.trigger.cron", "never fires")


def _fires(cron: str) -> bool:
    """Whether the cron ever fires (true of what is no cron at all: `_rules` says so)."""
    try:
        validate_cron(cron)
    except InvalidInput:
        return True
    try:
        croniter(cron, datetime.now(UTC), max_years_between_matches=_CRON_YEARS).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _trait_faults(path: str, action: TraitAction) -> Iterator[FieldError]:
    """The faults of a trait action's names and values (a templated value: its syntax,
    its value once rendered, by the step)."""
    for key, value in action.traits.items():
        fault = trait_name_fault(key)
        if fault is not None:
            yield FieldError(f"{path}.{fault[0]}", fault[1])
        elif isinstance(value, str) and rendering.is_template(value):
            for _, message in rendering.check_template(value):
                yield FieldError(f"{path}.traits.{key}", message)
        elif (problem := trait_value_fault(key, value)) is not None:
            yield FieldError(f"{path}.traits.{key}", problem)


def trait_name_fault(key: str) -> tuple[str, str] | None:
    """Why a journey may not set a trait of this name, if it may not: (the field under the
    action, `traits` or `traits.<key>`, and the message)."""
    if not key.strip():
        return "traits", "a trait name cannot be empty"
    if len(key) > MAX_NAME_LENGTH:
        return "traits", (
            f"the trait name {key[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
        )
    folded = key.lower().replace("_", "").replace("-", "").replace(" ", "")
    if folded in IDENTITY_TRAITS:
        return f"traits.{key}", "is the profile's identity: a journey cannot set it"
    return None


def trait_value_fault(key: str, value: Any) -> str | None:
    """Why a journey may not set trait `key` to `value` (already rendered), if it may not:
    an email that is no email address, a phone that is no phone number, a value the
    databases cannot keep as it is."""
    if key == "email" and normalize_email(value) is None:
        return "is not an email address"
    if key == "phone" and normalize_phone(value) is None:
        return "is not a phone number (6 to 20 digits)"
    return _unkeepable(value)


# How a trait value's fault reads (`core.documents.json_fault`; NOT_JSON names the type).
_FAULTS = {
    FaultKind.BEYOND_64_BITS: "holds a number beyond 64 bits",
    FaultKind.NOT_FINITE: "holds a number that is not finite",
    FaultKind.NUL: "holds a NUL character",
    FaultKind.NOT_UNICODE: "holds text that is not valid Unicode",
    FaultKind.TOO_DEEP: f"is nested more than {MAX_JSON_DEPTH} levels deep",
    FaultKind.KEY_NOT_TEXT: "has a key that is not text",
    FaultKind.NOT_JSON: "is not JSON",
}


def _unkeepable(value: Any) -> str | None:
    """Why a value is no JSON that both databases keep as it is, if it is not."""
    fault = json_fault(value)
    if fault is None:
        return None
    if fault.kind is FaultKind.NOT_JSON:
        return f"is not JSON ({type(fault.part).__name__})"
    return _FAULTS[fault.kind]
