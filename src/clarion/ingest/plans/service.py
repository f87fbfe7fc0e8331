"""Tracking plans: saving, reading and deleting them, and recording and reading violations.

A source uses the plan connected to it, else the workspace's default plan, else none.
Services flush and never commit; after a commit that changed a plan, the caller announces
the change (`cache.announce_change`) so every process drops its cached copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, InvalidInput, NotFound
from clarion.core.pagination import decode_time_id_cursor, encode_cursor
from clarion.ingest.plans.definitions import check_rules
from clarion.ingest.plans.models import TrackingPlan, TrackingPlanSource, TrackingViolation
from clarion.ingest.plans.schemas import (
    HIDDEN,
    TrackingPlanCreate,
    TrackingPlanRead,
    ViolationKind,
)
from clarion.ingest.plans.secrets import HeaderVault
from clarion.workspaces import service as workspaces


async def list_plans(session: AsyncSession, *, workspace_id: int) -> list[TrackingPlanRead]:
    """The workspace's plans, oldest first."""
    query = select(TrackingPlan).where(TrackingPlan.workspace_id == workspace_id)
    plans = (await session.scalars(query.order_by(TrackingPlan.id))).all()
    return await _read(session, plans)


async def get_plan_or_raise(
    session: AsyncSession, *, workspace_id: int, plan_id: int
) -> TrackingPlanRead:
    """The workspace's plan `plan_id`; NotFound when it is absent or another's."""
    [plan] = await _read(session, [await _plan_or_raise(session, workspace_id, plan_id)])
    return plan


async def create_plan(
    session: AsyncSession,
    *,
    workspace_id: int,
    body: TrackingPlanCreate,
    headers: HeaderVault,
    now: datetime,
) -> TrackingPlanRead:
    """A new plan, its enrichment header values sealed with `headers`; InvalidInput,
    Conflict or NotFound (naming the field) change nothing."""
    check_rules(body.events)
    rules = _stored_rules(body, [], headers)
    await _check_name(session, workspace_id, body.name, plan_id=None)
    sources = await _check_sources(session, workspace_id, body.source_ids, plan_id=None)
    plan = TrackingPlan(workspace_id=workspace_id, version=1, created_at=now)
    _fill(plan, body, rules, now)
    session.add(plan)
    await session.flush()
    await _connect(session, workspace_id, plan, sources, default=body.default)
    [read] = await _read(session, [plan])
    return read


async def update_plan(
    session: AsyncSession,
    *,
    workspace_id: int,
    plan_id: int,
    body: TrackingPlanCreate,
    headers: HeaderVault,
    now: datetime,
) -> TrackingPlanRead:
    """The plan with its content replaced by `body`, one version later; header values
    sent as HIDDEN keep their stored ones, the others are sealed with `headers`."""
    plan = await _plan_or_raise(session, workspace_id, plan_id)
    check_rules(body.events)
    rules = _stored_rules(body, plan.events, headers)
    await _check_name(session, workspace_id, body.name, plan_id=plan.id)
    sources = await _check_sources(session, workspace_id, body.source_ids, plan_id=plan.id)
    _fill(plan, body, rules, now)
    plan.version += 1
    await session.execute(delete(TrackingPlanSource).where(TrackingPlanSource.plan_id == plan.id))
    await session.flush()
    await _connect(session, workspace_id, plan, sources, default=body.default)
    [read] = await _read(session, [plan])
    return read


async def delete_plan(session: AsyncSession, *, workspace_id: int, plan_id: int) -> None:
    """Delete the plan; its sources fall back to the default plan. Violations are kept."""
    plan = await _plan_or_raise(session, workspace_id, plan_id)
    await session.execute(delete(TrackingPlanSource).where(TrackingPlanSource.plan_id == plan.id))
    await session.delete(plan)
    await session.flush()


def _step_key(rule: dict[str, Any], step: dict[str, Any]) -> tuple[Any, ...]:
    return (rule.get("type"), rule.get("name"), step.get("name"))


def _hide_headers(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule as the API shows it: header values (tokens, as a rule) never leave."""
    steps = [
        {**step, "headers": dict.fromkeys(step.get("headers", {}), HIDDEN)}
        for step in rule.get("enrichments", [])
    ]
    return {**rule, "enrichments": steps}


def _stored_rules(
    body: TrackingPlanCreate, stored: list[dict[str, Any]], headers: HeaderVault
) -> list[dict[str, Any]]:
    """`body`'s rules as they are stored: header values sealed, and each still reading
    HIDDEN given its stored value (so a plan read and sent back unchanged keeps its
    secrets); InvalidInput if there is none to keep."""
    known = {
        _step_key(rule, step): step.get("headers", {})
        for rule in stored
        for step in rule.get("enrichments", [])
    }
    rules = []
    for r, rule in enumerate(body.events):
        document = rule.model_dump(mode="json")
        for n, step in enumerate(document.get("enrichments", [])):
            old = known.get(_step_key(document, step), {})
            for header, value in step["headers"].items():
                if value != HIDDEN:
                    step["headers"][header] = headers.seal(value)
                elif header in old:
                    step["headers"][header] = headers.sealed(old[header])
                else:
                    raise InvalidInput(
                        f"Header {header!r} of step {step['name']!r} has no stored value to keep.",
                        errors=[
                            FieldError(
                                f"events.{r}.enrichments.{n}.headers.{header}",
                                "send the value; the hidden placeholder keeps a stored one",
                            )
                        ],
                    )
        rules.append(document)
    return rules


def _fill(
    plan: TrackingPlan, body: TrackingPlanCreate, rules: list[dict[str, Any]], now: datetime
) -> None:
    plan.name = body.name
    plan.is_default = body.default
    plan.unplanned_events = body.unplanned_events.value
    plan.invalid_events = body.invalid_events.value
    plan.events = rules
    plan.updated_at = now


async def _connect(
    session: AsyncSession,
    workspace_id: int,
    plan: TrackingPlan,
    sources: list[uuid.UUID],
    *,
    default: bool,
) -> None:
    if default:  # one default per workspace: the newest choice wins
        await session.execute(
            update(TrackingPlan)
            .where(TrackingPlan.workspace_id == workspace_id, TrackingPlan.id != plan.id)
            .values(is_default=False)
        )
    for source_id in sources:
        session.add(
            TrackingPlanSource(source_id=source_id, workspace_id=workspace_id, plan_id=plan.id)
        )
    await session.flush()


async def _plan_or_raise(session: AsyncSession, workspace_id: int, plan_id: int) -> TrackingPlan:
    plan = await session.scalar(
        select(TrackingPlan).where(
            TrackingPlan.workspace_id == workspace_id, TrackingPlan.id == plan_id
        )
    )
    if plan is None:
        raise NotFound(f"No tracking plan {plan_id} in this workspace.")
    return plan


async def _check_name(
    session: AsyncSession, workspace_id: int, name: str, *, plan_id: int | None
) -> None:
    query = select(TrackingPlan.id).where(
        TrackingPlan.workspace_id == workspace_id, TrackingPlan.name == name
    )
    existing = await session.scalar(query)
    if existing is not None and existing != plan_id:
        raise Conflict(
            f"A tracking plan named {name!r} already exists.",
            errors=[FieldError("name", "already taken in this workspace")],
        )


async def _check_sources(
    session: AsyncSession, workspace_id: int, source_ids: list[uuid.UUID], *, plan_id: int | None
) -> list[uuid.UUID]:
    """The distinct sources, each of the workspace and connected to no other plan."""
    wanted = list(dict.fromkeys(source_ids))
    for index, source_id in enumerate(wanted):
        try:
            await workspaces.get_source_or_raise(
                session, workspace_id=workspace_id, source_id=source_id
            )
        except NotFound as exc:
            field = f"source_ids.{source_ids.index(source_id)}"
            raise NotFound(exc.detail, errors=[FieldError(field, "no such source")]) from None
        owner = await session.scalar(
            select(TrackingPlanSource.plan_id).where(TrackingPlanSource.source_id == source_id)
        )
        if owner is not None and owner != plan_id:
            raise Conflict(
                f"Source {source_id} is already connected to tracking plan {owner}.",
                errors=[FieldError(f"source_ids.{index}", "connected to another plan")],
            )
    return wanted


async def _read(session: AsyncSession, plans: Sequence[TrackingPlan]) -> list[TrackingPlanRead]:
    ids = [plan.id for plan in plans]
    links: dict[int, list[uuid.UUID]] = {plan_id: [] for plan_id in ids}
    if ids:
        rows = await session.execute(
            select(TrackingPlanSource.plan_id, TrackingPlanSource.source_id)
            .where(TrackingPlanSource.plan_id.in_(ids))
            .order_by(TrackingPlanSource.source_id)
        )
        for plan_id, source_id in rows:
            links[plan_id].append(source_id)
    return [
        TrackingPlanRead(
            id=plan.id,
            name=plan.name,
            default=plan.is_default,
            source_ids=links[plan.id],
            unplanned_events=plan.unplanned_events,
            invalid_events=plan.invalid_events,
            events=[_hide_headers(rule) for rule in plan.events],
            version=plan.version,
            created_at=plan.created_at,
            updated_at=plan.updated_at,
        )
        for plan in plans
    ]


async def load_snapshot(session: AsyncSession, *, workspace_id: int) -> dict[str, Any]:
    """Everything a review needs of the workspace's plans, as a JSON document (cacheable)."""
    plans = (
        await session.scalars(
            select(TrackingPlan)
            .where(TrackingPlan.workspace_id == workspace_id)
            .order_by(TrackingPlan.id)
        )
    ).all()
    links = await session.execute(
        select(TrackingPlanSource.source_id, TrackingPlanSource.plan_id).where(
            TrackingPlanSource.workspace_id == workspace_id
        )
    )
    return {
        "plans": [
            {
                "id": plan.id,
                "version": plan.version,
                "unplanned_events": plan.unplanned_events,
                "invalid_events": plan.invalid_events,
                "events": plan.events,
            }
            for plan in plans
        ],
        "sources": {str(source_id): plan_id for source_id, plan_id in links},
        "default": next((plan.id for plan in plans if plan.is_default), None),
    }


# Violations


async def record_violations(
    session: AsyncSession, *, workspace_id: int, rows: list[dict[str, Any]]
) -> None:
    """Insert violation rows; one already recorded for the same event and kind is kept."""
    if not rows:
        return
    values = [{**row, "workspace_id": workspace_id} for row in rows]
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(TrackingViolation).on_conflict_do_nothing(
        index_elements=["workspace_id", "event_id", "kind"]
    )
    await session.execute(statement, values)
    await session.flush()


@dataclass(frozen=True, slots=True)
class ViolationFilter:
    """What to read of the violations; every field narrows the result."""

    event: str | None = None
    kind: ViolationKind | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_violations(
    session: AsyncSession,
    *,
    workspace_id: int,
    where: ViolationFilter,
    limit: int,
    cursor: str | None = None,
) -> tuple[Sequence[TrackingViolation], str | None]:
    """A page of the workspace's violations, newest first, and the next page's cursor."""
    query: Select[TrackingViolation] = select(TrackingViolation).where(
        TrackingViolation.workspace_id == workspace_id
    )
    if where.event is not None:
        query = query.where(TrackingViolation.event_name == where.event)
    if where.kind is not None:
        query = query.where(TrackingViolation.kind == where.kind.value)
    if where.since is not None:
        query = query.where(TrackingViolation.created_at >= where.since)
    if where.until is not None:
        query = query.where(TrackingViolation.created_at < where.until)
    if cursor is not None:
        after, after_id = decode_time_id_cursor(cursor)
        query = query.where(
            or_(
                TrackingViolation.created_at < after,
                and_(TrackingViolation.created_at == after, TrackingViolation.id < after_id),
            )
        )
    query = query.order_by(TrackingViolation.created_at.desc(), TrackingViolation.id.desc())
    rows = (await session.scalars(query.limit(limit + 1))).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at.isoformat(), last.id)
