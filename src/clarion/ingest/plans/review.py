"""The pipeline's entry point: review a batch of events against their plans, then record.

`TrackingPlans.review` holds no database transaction (it may call HTTP endpoints): it reads
the plans through the cache, checks every event, enriches the ones that go on, and returns
what to record. `record` writes that in the caller's transaction, idempotently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from referencing.exceptions import Unresolvable
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import service
from clarion.ingest.plans.cache import PlanCache
from clarion.ingest.plans.definitions import CompiledPlan, CompiledRule
from clarion.ingest.plans.enrichment import Call, Enricher, EnrichmentFailed, resolve
from clarion.ingest.plans.schemas import Action, Mode, ViolationKind
from clarion.ingest.records import EventRecord

MAX_ERRORS = 20
_TRAITS_TYPES = ("identify", "group")


@dataclass(frozen=True, slots=True)
class ViolationError:
    """One thing wrong: a JSON path into the event, and what."""

    path: str
    message: str


@dataclass(frozen=True, slots=True)
class Violation:
    """What a review found wrong with one event, and what it did about it."""

    event_id: int
    message_id: str
    event_type: str
    event_name: str | None
    plan_id: int | None
    kind: ViolationKind
    action: Action
    errors: tuple[ViolationError, ...]


@dataclass(frozen=True, slots=True)
class Review:
    """The events to process further (same order, enriched, blocked ones left out) and the
    violations to record."""

    workspace_id: int
    events: list[EventRecord]
    violations: list[Violation]
    blocked: list[int]  # ids of the events left out
    reviewed_at: datetime


def _document(event: EventRecord) -> tuple[str, dict[str, Any]]:
    if event.type in _TRAITS_TYPES:
        return "traits", event.traits
    return "properties", event.properties


def _violation(
    event: EventRecord, plan_id: int | None, kind: ViolationKind, action: Action, errors: Any
) -> Violation:
    return Violation(
        event.id, event.message_id, event.type, event.name, plan_id, kind, action, tuple(errors)
    )


def check(event: EventRecord, plan: CompiledPlan) -> tuple[Violation | None, CompiledRule | None]:
    """The event's violation under `plan` (None when clean or allowed) and its rule."""
    if event.type == "alias":
        return None, None
    rule = plan.rule_for(event.type, event.name)
    if rule is None:
        if event.type != "track" or plan.unplanned_events is Mode.ALLOW:
            return None, None
        action = Action.BLOCKED if plan.unplanned_events is Mode.BLOCK else Action.WARNED
        error = ViolationError("$.event", f"{event.name!r} is not in the tracking plan")
        return _violation(event, plan.id, ViolationKind.UNPLANNED, action, [error]), None
    errors = validate(rule, event)
    if not errors or plan.invalid_events is Mode.ALLOW:
        return None, rule
    action = Action.BLOCKED if plan.invalid_events is Mode.BLOCK else Action.WARNED
    return _violation(event, plan.id, ViolationKind.INVALID, action, errors), rule


def validate(rule: CompiledRule, event: EventRecord) -> list[ViolationError]:
    """The event's payload errors under the rule's schema, by path (at most MAX_ERRORS)."""
    name, document = _document(event)
    try:
        found = sorted(rule.validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    except Unresolvable as exc:
        return [ViolationError(f"$.{name}", f"the schema cannot be applied: {exc}")]
    return [
        ViolationError(f"$.{name}{error.json_path[1:]}", error.message)
        for error in found[:MAX_ERRORS]
    ]


class TrackingPlans:
    """One per process: the plans cache, the enrichment HTTP client and its response cache."""

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self._clock = clock
        self._plans = PlanCache(database, settings, clock)
        self._enricher = Enricher(clock, policy=settings.outbound_policy())

    async def review(self, workspace_id: int, events: list[EventRecord]) -> Review:
        """Check and enrich a batch of one workspace's events; see the module docstring."""
        now = self._clock.now()
        config = await self._plans.get(workspace_id)
        if not config.plans:
            return Review(workspace_id, list(events), [], [], now)
        violations: list[Violation] = []
        kept: list[tuple[EventRecord, int | None, CompiledRule | None]] = []
        blocked: list[int] = []
        for event in events:
            plan = config.plan_for(event.source_id)
            if plan is None:
                kept.append((event, None, None))
                continue
            violation, rule = check(event, plan)
            if violation is not None:
                violations.append(violation)
                if violation.action is Action.BLOCKED:
                    blocked.append(event.id)
                    continue
            kept.append((event, plan.id, rule))
        enriched, failures = await self._enrich(kept)
        violations += failures
        return Review(workspace_id, enriched, violations, blocked, now)

    async def _enrich(
        self, kept: list[tuple[EventRecord, int | None, CompiledRule | None]]
    ) -> tuple[list[EventRecord], list[Violation]]:
        calls: list[tuple[int, Call]] = []
        failed: dict[int, list[ViolationError]] = {}
        for index, (event, _, rule) in enumerate(kept):
            if rule is None:
                continue
            for step in rule.enrichments:
                try:
                    if step.name in rule.unreadable:
                        raise EnrichmentFailed(
                            f"step {step.name!r}: its header values cannot be read with this "
                            "secret key (it changed?): save them again"
                        )
                    calls.append((index, resolve(step, event)))
                except EnrichmentFailed as exc:
                    failed.setdefault(index, []).append(_failure(event, str(exc)))
        if not calls and not failed:
            return [event for event, _, _ in kept], []
        batch = self._enricher.batch()
        results = await asyncio.gather(
            *(self._enricher.run(call, batch) for _, call in calls), return_exceptions=True
        )
        added: dict[int, dict[str, Any]] = {}
        for (index, _), result in zip(calls, results, strict=True):
            if isinstance(result, EnrichmentFailed):
                failed.setdefault(index, []).append(_failure(kept[index][0], str(result)))
            elif isinstance(result, BaseException):
                raise result
            else:
                added.setdefault(index, {}).update(result)
        events = [_merged(event, added.get(i)) for i, (event, _, _) in enumerate(kept)]
        violations = [
            _violation(kept[i][0], kept[i][1], ViolationKind.ENRICHMENT_FAILED, Action.ALLOWED, e)
            for i, e in sorted(failed.items())
        ]
        return events, violations

    async def record(self, session: AsyncSession, review: Review) -> None:
        """Write the review's violations in the caller's transaction (flush only); a re-run
        of the same review writes nothing twice."""
        rows = [
            {
                "event_id": v.event_id,
                "message_id": v.message_id,
                "event_type": v.event_type,
                "event_name": v.event_name,
                "plan_id": v.plan_id,
                "kind": v.kind.value,
                "action": v.action.value,
                "errors": [{"path": e.path, "message": e.message} for e in v.errors],
                "created_at": review.reviewed_at,
            }
            for v in review.violations
        ]
        await service.record_violations(session, workspace_id=review.workspace_id, rows=rows)

    async def invalidate(self, workspace_id: int) -> None:
        """After a committed change to a workspace's plans: every process drops its copy."""
        await self._plans.announce(workspace_id)

    def cached(self, workspace_id: int) -> bool:
        """Whether this process holds a fresh copy of the workspace's plans."""
        return self._plans.cached(workspace_id)

    async def close(self) -> None:
        """Release the HTTP client and the Redis connections."""
        await self._enricher.close()
        await self._plans.close()


def _failure(event: EventRecord, message: str) -> ViolationError:
    return ViolationError(f"$.{_document(event)[0]}", message)


def _merged(event: EventRecord, added: dict[str, Any] | None) -> EventRecord:
    if not added:
        return event
    if event.type in _TRAITS_TYPES:
        return event._replace(traits={**event.traits, **added})
    return event._replace(properties={**event.properties, **added})
