"""Checking a plan's content when it is saved, and compiling it once per version.

Everything that can be known wrong without an event is refused here, naming the field:
schemas that are not draft 2020-12, remote `$ref`s, duplicate rules, enrichment variables
from paths no event has, GraphQL queries that do not read, and mappings from response paths
the query never selects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from clarion.core.crypto import UnreadableSecret
from clarion.core.errors import FieldError, InvalidInput
from clarion.ingest.plans.paths import event_path_problem, response_path_problem
from clarion.ingest.plans.schemas import EnrichmentStep, EventRule, Mode, RuleType
from clarion.ingest.plans.secrets import HeaderVault

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_NAMELESS = (RuleType.IDENTIFY, RuleType.GROUP)


def check_rules(rules: list[EventRule]) -> None:
    """InvalidInput naming every field at fault in a plan's rules; nothing when all is well."""
    errors: list[FieldError] = []
    seen: dict[tuple[str, str | None], int] = {}
    for index, rule in enumerate(rules):
        where = f"events.{index}"
        if rule.type is RuleType.TRACK and rule.name is None:
            errors.append(FieldError(f"{where}.name", "a track rule needs the event's name"))
        if rule.type in _NAMELESS and rule.name is not None:
            errors.append(FieldError(f"{where}.name", f"a {rule.type} rule has no name"))
        key = (rule.type.value, rule.name)
        if key in seen:
            errors.append(FieldError(f"{where}.name", f"same event as events.{seen[key]}"))
        seen.setdefault(key, index)
        errors += [FieldError(f"{where}.json_schema", m) for m in schema_problems(rule.json_schema)]
        for number, step in enumerate(rule.enrichments):
            errors += step_problems(step, f"{where}.enrichments.{number}")
        targets = [t for step in rule.enrichments for t in step.mapping.values()]
        if len(targets) != len(set(targets)):
            errors.append(FieldError(f"{where}.enrichments", "two mappings add the same property"))
    if errors:
        raise InvalidInput("The tracking plan is not valid.", errors=errors)


def schema_problems(schema: dict[str, Any]) -> list[str]:
    """Why `schema` is not a usable draft 2020-12 JSON Schema (empty when it is)."""
    declared = schema.get("$schema")
    if declared is not None and str(declared).rstrip("#") != DRAFT_2020_12:
        return [f"only JSON Schema draft 2020-12 ({DRAFT_2020_12}) is supported"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        location = "/".join(str(part) for part in exc.absolute_path)
        return [f"{exc.message}" + (f" (at /{location})" if location else "")]
    remote = sorted(set(_remote_refs(schema)))
    return [f"only local references (#...) are supported, not {ref!r}" for ref in remote]


def _remote_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                if not value.startswith("#"):
                    yield value
            else:
                yield from _remote_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _remote_refs(item)


def step_problems(step: EnrichmentStep, where: str) -> list[FieldError]:
    """What is wrong with one enrichment step."""
    errors: list[FieldError] = []
    url = urlsplit(step.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        errors.append(FieldError(f"{where}.url", "must be an http:// or https:// URL"))
    for name, path in step.variables.items():
        problem = event_path_problem(path)
        if problem:
            errors.append(FieldError(f"{where}.variables.{name}", problem))
    for target in step.mapping.values():
        if not target or "." in target or len(target) > 255:
            errors.append(FieldError(f"{where}.mapping", f"{target!r} is not a property name"))
    errors += _path_problems(step, where)
    if step.kind == "graphql":
        errors += _graphql_problems(step, where)
    elif step.query is not None:
        errors.append(FieldError(f"{where}.query", "only GraphQL steps have a query"))
    return errors


def _path_problems(step: EnrichmentStep, where: str) -> list[FieldError]:
    errors = []
    for path in step.mapping:
        problem = response_path_problem(path)
        if problem:
            errors.append(FieldError(f"{where}.mapping.{path}", problem))
    return errors


def _graphql_problems(step: EnrichmentStep, where: str) -> list[FieldError]:
    # Imported here: graphql-core takes ~0.3 s to import, paid by every command otherwise.
    from clarion.ingest.plans.graphql import QueryError, path_in_selection, read_query

    if not step.query:
        return [FieldError(f"{where}.query", "a GraphQL step needs a query")]
    try:
        query = read_query(step.query)
    except QueryError as exc:
        return [FieldError(f"{where}.query", str(exc))]
    errors = []
    for name in sorted(query.required - set(step.variables)):
        errors.append(FieldError(f"{where}.variables", f"the query needs ${name}"))
    for name in sorted(set(step.variables) - query.variables):
        errors.append(FieldError(f"{where}.variables.{name}", f"the query declares no ${name}"))
    for path in step.mapping:
        if response_path_problem(path) is None and not path_in_selection(
            query.selection, path.split(".")
        ):
            errors.append(FieldError(f"{where}.mapping.{path}", "the query selects no such path"))
    return errors


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to apply: its validator built once."""

    type: RuleType
    name: str | None
    validator: Draft202012Validator
    enrichments: tuple[EnrichmentStep, ...]
    # Steps whose header values this secret key cannot open: they fail without a call.
    unreadable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    """A plan version ready to apply to events."""

    id: int
    version: int
    unplanned_events: Mode
    invalid_events: Mode
    rules: dict[tuple[str, str | None], CompiledRule]

    def rule_for(self, event_type: str, name: str | None) -> CompiledRule | None:
        """The rule of an event: by type and name, else the type's nameless rule."""
        rule = self.rules.get((event_type, name))
        if rule is None and event_type in (RuleType.PAGE, RuleType.SCREEN):
            rule = self.rules.get((event_type, None))
        return rule


def compile_plan(
    *,
    plan_id: int,
    version: int,
    unplanned: str,
    invalid: str,
    events: list[dict[str, Any]],
    headers: HeaderVault,
) -> CompiledPlan:
    """Build the validators of a stored plan (its content was checked when saved), its
    enrichment header values opened with `headers`."""
    rules = {}
    for raw in events:
        rule = EventRule.model_validate(raw)
        validator = Draft202012Validator(
            rule.json_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        steps, unreadable = [], set()
        for step in rule.enrichments:
            try:
                opened = {name: headers.open(value) for name, value in step.headers.items()}
            except UnreadableSecret:
                opened = {}
                unreadable.add(step.name)
            steps.append(step.model_copy(update={"headers": opened}))
        rules[(rule.type.value, rule.name)] = CompiledRule(
            rule.type, rule.name, validator, tuple(steps), frozenset(unreadable)
        )
    return CompiledPlan(plan_id, version, Mode(unplanned), Mode(invalid), rules)
