"""Reading rules from JSON: the object form and the conjunctive array form.

`parse_rule` turns a JSON document into `rules` nodes and reports every fault with the path
of the node at fault (`rule.conditions.2.value`). The conjunctive array form
`[["productId eq 1", "productId eq 2"], ["cityId eq 2"]]` (inner lists OR, the outer list
AND) becomes the same nodes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from clarion.core.errors import FieldError
from clarion.core.schemas import in_utc
from clarion.segments.rules import (
    AGGREGATE_FUNCTIONS,
    ATTRIBUTES,
    COMPARE_OPERATORS,
    COUNT_OPERATORS,
    DATE_OPERATORS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_LIST,
    MAX_NAME,
    MAX_NODES,
    MEASURES,
    ORDER_OPERATORS,
    TIME_OPERATORS,
    Aggregate,
    All,
    Any_,
    AttributeTime,
    Compare,
    EventCondition,
    InSegment,
    Not,
    Occurrence,
    Performed,
    Rfm,
    Rule,
    TopPercent,
    Window,
)

_FIELD = re.compile(r"^[^.\s][^.]*(\.[^.]+)*$")  # dotted path, no empty part

# --- Reading --------------------------------------------------------------------------------


class RuleError(Exception):
    """A rule document that is not a valid rule; `errors` names every node at fault."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass
class _Reader:
    errors: list[FieldError] = field(default_factory=list)
    nodes: int = 0

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def rule(self, raw: Any, path: str, *, depth: int = 0, where: bool = False) -> Rule | None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            if self.nodes == MAX_NODES + 1:
                self.fail(path, f"a rule has at most {MAX_NODES} nodes")
            return None
        if depth > MAX_DEPTH:
            self.fail(path, f"groups nest at most {MAX_DEPTH} deep")
            return None
        if not isinstance(raw, dict):
            self.fail(path, "must be an object with a type")
            return None
        kind = raw.get("type")
        allowed = _WHERE_TYPES if where else _RULE_TYPES
        if kind not in allowed:
            self.fail(f"{path}.type", f"must be one of {', '.join(sorted(allowed))}")
            return None
        self._no_extra(raw, path, _FIELDS[kind])
        if kind in ("all", "any"):
            items = raw.get("conditions")
            if not isinstance(items, list):
                self.fail(f"{path}.conditions", "must be a list of conditions")
                return None
            parsed = [
                self.rule(item, f"{path}.conditions.{i}", depth=depth + 1, where=where)
                for i, item in enumerate(items)
            ]
            conditions = tuple(c for c in parsed if c is not None)
            return All(conditions) if kind == "all" else Any_(conditions)
        if kind == "not":
            inner = self.rule(
                raw.get("condition"), f"{path}.condition", depth=depth + 1, where=where
            )
            return Not(inner) if inner is not None else None
        if kind in ("trait", "property"):
            return self._compare(raw, path, kind)
        if kind == "attribute":
            return self._attribute(raw, path)
        if kind in ("event", "aggregate", "occurrence"):
            return self._event_condition(raw, path, kind, depth)
        if kind == "segment":
            segment_id = raw.get("segment_id")
            if not isinstance(segment_id, int) or not _is_int(segment_id) or segment_id < 1:
                self.fail(f"{path}.segment_id", "must be a segment id (a positive integer)")
                return None
            return InSegment(segment_id)
        if kind == "top_percent":
            return self._top_percent(raw, path)
        return self._rfm(raw, path)

    def _top_percent(self, raw: dict[str, Any], path: str) -> TopPercent | None:
        measure, percent = raw.get("measure", "lifetime_value"), raw.get("percent")
        if measure not in MEASURES:
            self.fail(f"{path}.measure", f"must be one of {', '.join(MEASURES)}")
            return None
        if not isinstance(percent, int) or not _is_int(percent) or not 1 <= percent <= 99:
            self.fail(f"{path}.percent", "must be a whole number from 1 to 99")
            return None
        return TopPercent(measure, percent)

    def _no_extra(self, raw: dict[str, Any], path: str, allowed: frozenset[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.fail(f"{path}.{key}", "is not a field of this condition")

    def _name(self, raw: Any, path: str, what: str) -> str | None:
        if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_NAME:
            self.fail(path, f"must be {what}: a non-empty string of at most {MAX_NAME} characters")
            return None
        return raw

    def _path(self, raw: Any, path: str) -> str | None:
        name = self._name(raw, path, "a key")
        if name is not None and not _FIELD.match(name):
            self.fail(path, "must be a key, or keys joined by dots, with no empty part")
            return None
        return name

    def _compare(self, raw: dict[str, Any], path: str, source: str) -> Compare | None:
        key = self._path(raw.get(source), f"{path}.{source}")
        operator = raw.get("operator")
        if operator not in COMPARE_OPERATORS:
            self.fail(f"{path}.operator", f"must be one of {', '.join(COMPARE_OPERATORS)}")
            return None
        if operator in DATE_OPERATORS and source == "property":
            self.fail(f"{path}.operator", f"{operator} applies to traits only")
            return None
        value = self._compare_value(operator, raw.get("value"), "value" in raw, f"{path}.value")
        if key is None or value is _BAD:
            return None
        return Compare(source, key, operator, value)  # type: ignore[arg-type]

    def _compare_value(self, operator: str, value: Any, given: bool, path: str) -> Any:
        if operator == "exists":
            if given and value is not None:
                self.fail(path, "exists takes no value")
                return _BAD
            return None
        if operator in DATE_OPERATORS:
            return self._days(value, path)
        if operator in ("in", "not_in"):
            if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                self.fail(path, f"{operator} takes a list of 1 to {MAX_LIST} values")
                return _BAD
            for i, item in enumerate(value):
                if not _is_scalar(item):
                    self.fail(f"{path}.{i}", "must be a string, a number or a boolean")
                    return _BAD
            return tuple(value)
        if operator == "between":
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not (all(_is_number(v) for v in value) or all(isinstance(v, str) for v in value))
            ):
                self.fail(path, "between takes [low, high]: two numbers or two strings")
                return _BAD
            if value[0] > value[1]:
                self.fail(path, "between needs low <= high")
                return _BAD
            return tuple(value)
        if operator in ORDER_OPERATORS:
            if not (_is_number(value) or isinstance(value, str)):
                self.fail(path, f"{operator} compares with a number or a string")
                return _BAD
            return value
        if operator in ("contains", "starts_with"):
            if operator == "starts_with" and not isinstance(value, str):
                self.fail(path, "starts_with takes a string")
                return _BAD
            if not _is_scalar(value):
                self.fail(path, "contains takes a string, a number or a boolean")
                return _BAD
            return value
        if not _is_scalar(value):  # eq, neq
            self.fail(path, f"{operator} compares with a string, a number or a boolean")
            return _BAD
        return value

    def _days(self, value: Any, path: str) -> int | object:
        if not _is_int(value) or value < 1 or value > MAX_DAYS:
            self.fail(path, f"must be a whole number of days, 1 to {MAX_DAYS}")
            return _BAD
        return int(value)

    def _time_value(self, operator: str, value: Any, path: str) -> datetime | int | object:
        if operator in ("before", "after"):
            moment = _instant(value)
            if moment is None:
                self.fail(path, f"{operator} takes an ISO 8601 date or date-time")
                return _BAD
            return moment
        return self._days(value, path)

    def _attribute(self, raw: dict[str, Any], path: str) -> AttributeTime | None:
        attribute = raw.get("attribute")
        if attribute not in ATTRIBUTES:
            self.fail(f"{path}.attribute", f"must be one of {', '.join(ATTRIBUTES)}")
        operator = raw.get("operator")
        if operator not in TIME_OPERATORS:
            self.fail(f"{path}.operator", f"must be one of {', '.join(TIME_OPERATORS)}")
            return None
        value = self._time_value(operator, raw.get("value"), f"{path}.value")
        if attribute not in ATTRIBUTES or value is _BAD:
            return None
        return AttributeTime(attribute, operator, value)  # type: ignore[arg-type]

    def _event_condition(
        self, raw: dict[str, Any], path: str, kind: str, depth: int
    ) -> EventCondition | None:
        event = self._name(raw.get("event"), f"{path}.event", "an event name")
        where = None
        if raw.get("where") is not None:
            where = self.rule(raw["where"], f"{path}.where", depth=depth + 1, where=True)
            if where is None:
                return None
        if kind == "occurrence":
            which = raw.get("which", "last")
            if which not in ("first", "last"):
                self.fail(f"{path}.which", "must be first or last")
                return None
            operator = raw.get("operator")
            if operator not in TIME_OPERATORS:
                self.fail(f"{path}.operator", f"must be one of {', '.join(TIME_OPERATORS)}")
                return None
            value = self._time_value(operator, raw.get("value"), f"{path}.value")
            if event is None or value is _BAD:
                return None
            return Occurrence(event, which, operator, value, where)  # type: ignore[arg-type]
        window = self._window(raw.get("window"), f"{path}.window")
        if window is _BAD:
            return None
        if kind == "event":
            operator = raw.get("operator", "gte")
            count = raw.get("count", 1)
            if operator not in COUNT_OPERATORS:
                self.fail(f"{path}.operator", f"must be one of {', '.join(COUNT_OPERATORS)}")
                return None
            if not _is_int(count) or count < 0 or count > 2**31:
                self.fail(f"{path}.count", "must be a whole number, 0 or more")
                return None
            if event is None:
                return None
            return Performed(event, where, operator, int(count), window)  # type: ignore[arg-type]
        prop = self._path(raw.get("property"), f"{path}.property")
        function = raw.get("function")
        if function not in AGGREGATE_FUNCTIONS:
            self.fail(f"{path}.function", f"must be one of {', '.join(AGGREGATE_FUNCTIONS)}")
            return None
        operator = raw.get("operator")
        if operator not in (*COUNT_OPERATORS, "between"):
            self.fail(f"{path}.operator", f"must be one of {', '.join(COUNT_OPERATORS)}, between")
            return None
        value = raw.get("value")
        if operator == "between":
            if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
                self.fail(f"{path}.value", "between takes [low, high], two numbers")
                return None
            if value[0] > value[1]:
                self.fail(f"{path}.value", "between needs low <= high")
                return None
            value = (value[0], value[1])
        elif not _is_number(value):
            self.fail(f"{path}.value", f"{function} is compared with a number")
            return None
        if event is None or prop is None:
            return None
        return Aggregate(event, prop, function, operator, value, where, window)  # type: ignore[arg-type]

    def _window(self, raw: Any, path: str) -> Window | object | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.fail(path, "must be {last_days: N} or {from: date, to: date}")
            return _BAD
        self._no_extra(raw, path, frozenset({"last_days", "from", "to"}))
        if "last_days" in raw:
            if "from" in raw or "to" in raw:
                self.fail(path, "takes last_days or from/to, not both")
                return _BAD
            days = self._days(raw["last_days"], f"{path}.last_days")
            return _BAD if days is _BAD else Window(days=days)  # type: ignore[arg-type]
        start, end = _instant(raw.get("from")), _instant(raw.get("to"))
        if start is None:
            self.fail(f"{path}.from", "must be an ISO 8601 date or date-time")
        if end is None:
            self.fail(f"{path}.to", "must be an ISO 8601 date or date-time")
        if start is None or end is None:
            return _BAD
        if end <= start:
            self.fail(path, "to must be after from: the window is empty")
            return _BAD
        return Window(start=start, end=end)

    def _rfm(self, raw: dict[str, Any], path: str) -> Rfm | None:
        scores: dict[str, tuple[int, ...]] = {}
        for name in ("recency", "frequency", "monetary"):
            value = raw.get(name, [])
            if not isinstance(value, list) or not all(_is_int(v) and 1 <= v <= 5 for v in value):
                self.fail(f"{path}.{name}", "must be a list of scores from 1 to 5")
                return None
            scores[name] = tuple(sorted(set(value)))
        if not any(scores.values()):
            self.fail(path, "name at least one score of recency, frequency or monetary")
            return None
        return Rfm(**scores)


_BAD = object()
_COMMON = frozenset({"type"})
_FIELDS: dict[str, frozenset[str]] = {
    "all": _COMMON | {"conditions"},
    "any": _COMMON | {"conditions"},
    "not": _COMMON | {"condition"},
    "trait": _COMMON | {"trait", "operator", "value"},
    "property": _COMMON | {"property", "operator", "value"},
    "attribute": _COMMON | {"attribute", "operator", "value"},
    "event": _COMMON | {"event", "where", "operator", "count", "window"},
    "aggregate": _COMMON
    | {"event", "where", "property", "function", "operator", "value", "window"},
    "occurrence": _COMMON | {"event", "where", "which", "operator", "value"},
    "segment": _COMMON | {"segment_id"},
    "rfm": _COMMON | {"recency", "frequency", "monetary"},
    "top_percent": _COMMON | {"measure", "percent"},
}
_RULE_TYPES = frozenset(_FIELDS) - {"property"}
_WHERE_TYPES = frozenset({"all", "any", "not", "property"})


_INT64 = 2**63  # JSON columns keep integers of 64 bits at most


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _unkeepable_numbers(raw: Any, path: str) -> list[FieldError]:
    """Every number in a document that JSON cannot keep as given (infinities and NaN, and
    integers past 64 bits), by path. API bodies never hold them (`core.routing` refuses
    them); `clarion journeys apply` reads its file with YAML or pydantic, which take them."""
    errors: list[FieldError] = []
    stack = [(raw, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            stack.extend((item, f"{where}.{key}") for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{where}.{i}") for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(FieldError(where, "must be a finite number"))
        elif isinstance(value, int) and not isinstance(value, bool) and not _is_int(value):
            errors.append(FieldError(where, "must be a whole number within 64 bits"))
    return sorted(errors, key=lambda error: error.field)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


def _instant(raw: Any) -> datetime | None:
    """An ISO 8601 date or date-time as an aware UTC datetime (no offset: UTC)."""
    if not isinstance(raw, str):
        return None
    try:
        return in_utc(datetime.fromisoformat(raw))  # ValueError: not ISO, or off the calendar
    except ValueError:
        return None


def parse_rule(raw: Any) -> Rule:
    """The rule a JSON document describes (the object form or the conjunctive array form);
    raises RuleError naming every node at fault."""
    if unkeepable := _unkeepable_numbers(raw, "rule"):
        raise RuleError(unkeepable)
    if isinstance(raw, list):
        return parse_conjunctive(raw)
    reader = _Reader()
    rule = reader.rule(raw, "rule")
    if reader.errors or rule is None:
        raise RuleError(reader.errors or [FieldError("rule", "is not a rule")])
    return rule


def parse_where(raw: Any) -> Rule:
    """Conditions on an event's properties (what an event condition's `where` holds);
    raises RuleError naming every node at fault, under `where`."""
    if unkeepable := _unkeepable_numbers(raw, "where"):
        raise RuleError(unkeepable)
    reader = _Reader()
    rule = reader.rule(raw, "where", where=True)
    if reader.errors or rule is None:
        raise RuleError(reader.errors or [FieldError("where", "is not a condition")])
    return rule


# --- The conjunctive array form -------------------------------------------------------------

_CLAUSE = re.compile(r"^\s*(?P<key>\S+)\s+(?P<op>[a-z_]+)(?:\s+(?P<value>.*?))?\s*$")


def parse_conjunctive(raw: list[Any]) -> Rule:
    """`[[a, b], [c], d]`: the outer list ANDs, an inner list ORs its clauses; each clause is
    `"trait operator value"` (`"price lte 20"`, `"city in Paris,Lyon"`) or a condition
    object. A trait value that reads as JSON (number, true, false, "quoted") is taken as
    such, otherwise as text."""
    errors: list[FieldError] = []
    groups: list[Rule] = []
    if not raw:
        errors.append(FieldError("rule", "must hold at least one clause"))
    for i, group in enumerate(raw):
        items = group if isinstance(group, list) else [group]
        clauses: list[Rule] = []
        for j, clause in enumerate(items):
            path = f"rule.{i}.{j}" if isinstance(group, list) else f"rule.{i}"
            parsed = _clause(clause, path, errors)
            if parsed is not None:
                clauses.append(parsed)
        if isinstance(group, list) and not group:
            errors.append(FieldError(f"rule.{i}", "must hold at least one clause"))
        groups.append(clauses[0] if len(clauses) == 1 else Any_(tuple(clauses)))
    if errors:
        raise RuleError(errors)
    return groups[0] if len(groups) == 1 else All(tuple(groups))


def _clause(raw: Any, path: str, errors: list[FieldError]) -> Rule | None:
    if isinstance(raw, dict):
        reader = _Reader()
        rule = reader.rule(raw, path)
        errors.extend(reader.errors)
        return rule
    match = _CLAUSE.match(raw) if isinstance(raw, str) else None
    if match is None:
        errors.append(FieldError(path, 'must be "key operator value" or a condition object'))
        return None
    operator, text = match["op"], match["value"]
    value: Any
    if operator == "exists":
        if text is not None:
            errors.append(FieldError(path, "exists takes no value"))
            return None
        value = None
    elif text is None:
        errors.append(FieldError(path, f"{operator} needs a value"))
        return None
    elif operator in ("in", "not_in", "between"):
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            errors.append(FieldError(path, f"{operator} takes values between commas, none empty"))
            return None
        value = [_scalar(part) for part in parts]
    else:
        value = _scalar(text)
    document = {"type": "trait", "trait": match["key"], "operator": operator}
    if operator != "exists":
        document["value"] = value
    reader = _Reader()
    rule = reader.rule(document, path)
    errors.extend(reader.errors)
    return rule


def _scalar(text: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if _is_scalar(value) else text
