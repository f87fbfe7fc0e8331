"""Journeys: drafts, validation, publishing versions, and the states.

    draft ──publish──► live ──pause──► paused ──resume──► live
      │                 │ ▲                │
      │                 └─┘ publish        │
      └───────────── archive ◄─────────────┘   (from any state but archived)

Publishing compiles the draft against the workspace's segments, templates and channels
(`compiler.py`) and stores it as the next version, which new entries then follow; a paused
or archived journey cannot be published (resume it first). Anything else out of turn is a
Conflict naming `state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.pagination import decode_id_cursor, encode_cursor
from clarion.journeys import runtime
from clarion.journeys.compiler import Plan, References, compile_journey
from clarion.journeys.models import Journey, JourneyVersion
from clarion.messaging import channel_config
from clarion.messaging import templates as message_templates
from clarion.segments import service as segments

ALLOWED: dict[str, frozenset[str]] = {
    "edit": frozenset({"draft", "live", "paused"}),
    "publish": frozenset({"draft", "live"}),
    "pause": frozenset({"live"}),
    "resume": frozenset({"paused"}),
    "archive": frozenset({"draft", "live", "paused"}),
}
_DONE = {
    "edit": "edited",
    "publish": "published",
    "pause": "paused",
    "resume": "resumed",
    "archive": "archived",
}


def require_state(journey: Journey, action: str) -> None:
    """Conflict naming `state` unless the journey's state allows `action`."""
    if journey.state not in ALLOWED[action]:
        allowed = ", ".join(sorted(ALLOWED[action]))
        raise Conflict(
            f"A {journey.state} journey cannot be {_DONE[action]} (only {allowed}).",
            errors=[FieldError("state", f"is {journey.state}")],
        )


async def references(session: AsyncSession, *, workspace_id: int) -> References:
    """What of the workspace a journey may name."""
    return References(
        segments=await segments.segment_ids(session, workspace_id=workspace_id),
        templates=await message_templates.live_template_channels(
            session, workspace_id=workspace_id
        ),
        channels=await channel_config.channel_kinds(session, workspace_id=workspace_id),
    )


async def check_graph(session: AsyncSession, *, workspace_id: int, graph: Any) -> Plan:
    """The graph's plan against the workspace now; InvalidJourney naming every fault."""
    known = await references(session, workspace_id=workspace_id)
    return compile_journey(graph, known)


async def create_journey(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    description: str,
    graph: dict[str, Any],
    now: datetime,
) -> Journey:
    """A new draft (saved as drawn, valid or not); Conflict naming `name` when taken.
    Flushes only."""
    journey = Journey(
        workspace_id=workspace_id,
        name=name,
        description=description,
        state="draft",
        draft=graph,
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    await _flush_named(session, name)
    return journey


async def update_journey(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int,
    name: str | None = None,
    description: str | None = None,
    graph: dict[str, Any] | None = None,
    now: datetime,
) -> Journey:
    """The journey with its draft changed (what runs changes only when published).
    Flushes only."""
    journey = await get_journey_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, lock=True
    )
    require_state(journey, "edit")
    if name is not None:
        journey.name = name
    if description is not None:
        journey.description = description
    if graph is not None:
        journey.draft = graph
    journey.updated_at = now
    await _flush_named(session, journey.name)
    return journey


async def publish_journey(
    session: AsyncSession, *, workspace_id: int, journey_id: int, now: datetime
) -> JourneyVersion:
    """Compile the draft and make it the live version; InvalidJourney naming every fault
    (nothing saved), Conflict naming `state` for a paused or archived journey. Flushes
    only."""
    journey = await get_journey_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, lock=True
    )
    require_state(journey, "publish")
    plan = await check_graph(session, workspace_id=workspace_id, graph=journey.draft)
    last = await session.scalar(
        select(func.max(JourneyVersion.number)).where(JourneyVersion.journey_id == journey.id)
    )
    version = JourneyVersion(
        workspace_id=workspace_id,
        journey_id=journey.id,
        number=(last or 0) + 1,
        graph=journey.draft,
        plan=plan.document(),
        published_at=now,
    )
    session.add(version)
    journey.state = "live"
    journey.live_version = version.number
    journey.updated_at = now
    await session.flush()
    return version


async def change_state(
    session: AsyncSession, *, workspace_id: int, journey_id: int, action: str, now: datetime
) -> Journey:
    """Pause, resume or archive the journey; Conflict naming `state` out of turn. Flushes
    only."""
    journey = await get_journey_or_raise(
        session, workspace_id=workspace_id, journey_id=journey_id, lock=True
    )
    require_state(journey, action)
    journey.state = {"pause": "paused", "resume": "live", "archive": "archived"}[action]
    journey.updated_at = now
    await session.flush()
    if action == "resume":  # held runs move on
        await runtime.resume_runs(session, journey_id=journey.id, now=now)
    elif action == "archive":
        await runtime.end_runs(session, journey_id=journey.id, reason="journey archived", now=now)
    return journey


async def get_journey_or_raise(
    session: AsyncSession, *, workspace_id: int, journey_id: int, lock: bool = False
) -> Journey:
    """The workspace's journey; NotFound otherwise."""
    query = select(Journey).where(Journey.workspace_id == workspace_id, Journey.id == journey_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    journey = await session.scalar(query)
    if journey is None:
        raise NotFound(f"No journey {journey_id} in this workspace.")
    return journey


async def get_journey_by_name(
    session: AsyncSession, *, workspace_id: int, name: str
) -> Journey | None:
    """The workspace's journey called `name`, if any."""
    return await session.scalar(
        select(Journey).where(Journey.workspace_id == workspace_id, Journey.name == name)
    )


async def list_journeys(
    session: AsyncSession,
    *,
    workspace_id: int,
    state: str | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Journey], str | None]:
    """The workspace's journeys by id (in one state when given), cursor-paged."""
    query = select(Journey).where(Journey.workspace_id == workspace_id)
    if state is not None:
        query = query.where(Journey.state == state)
    if cursor is not None:
        query = query.where(Journey.id > decode_id_cursor(cursor))
    items = (await session.scalars(query.order_by(Journey.id).limit(limit + 1))).all()
    more = len(items) > limit
    items = items[:limit]
    return items, encode_cursor(items[-1].id) if more else None


async def list_versions(
    session: AsyncSession, *, workspace_id: int, journey_id: int
) -> Sequence[JourneyVersion]:
    """The journey's published versions, newest first."""
    await get_journey_or_raise(session, workspace_id=workspace_id, journey_id=journey_id)
    rows = await session.scalars(
        select(JourneyVersion)
        .where(JourneyVersion.journey_id == journey_id)
        .order_by(JourneyVersion.number.desc())
    )
    return rows.all()


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A journey called {name!r} already exists.",
            errors=[FieldError("name", "is taken by another journey")],
        ) from error
