"""The one way through, in code: what happens to accepted events, and which jobs exist.

For each batch of stored events (one `events.process` job, enqueued by the event writer
in the transaction that stored them) the pipeline:

1. reviews them against the workspace's tracking plan and enriches them, holding no
   database transaction (enrichment may call HTTP endpoints);
2. in one write transaction, records the plan's violations, applies the events to profiles
   (identity resolution, traits, computed traits, timeline) and completes the job, so a
   crash at any point leaves the batch either wholly applied or not at all.

A job takes over the ready jobs queued behind it under its serial key (one shard of
senders), up to `MAX_EVENTS_PER_RUN` events: their events join its batch and the jobs are
deleted in the same transaction that applies them. No other worker can run those jobs
meanwhile (only the oldest live job of a serial key is ever claimed, and this one is live
until it commits), so each sender's events stay in order and are applied exactly once, while
one run does the work of many small jobs. A retried job takes over nothing, so an event that
keeps failing fails only its own job.

Later stages (segments, journeys) join step 2, in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import BindParameter, String, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import Clock
from clarion.core.database import BigId, Database, JSONDocument, UTCDateTime
from clarion.core.jobs.worker import JobContext, PermanentFailure, Registry
from clarion.core.settings import Settings
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from clarion.ingest.plans import TrackingPlans
from clarion.ingest.plans.review import Review
from clarion.ingest.records import EventRecord
from clarion.profiles import service as profiles

# Events one run applies at most, its own job's and the ones it takes over. Bigger runs
# amortize the per-transaction cost further but hold SQLite's single writer longer.
MAX_EVENTS_PER_RUN = 1_000
_FOLLOWING_JOBS = 200  # queued jobs looked at per run

_EVENT_COLUMNS = (
    Event.id,
    Event.workspace_id,
    Event.source_id,
    Event.message_id,
    Event.type,
    Event.name,
    Event.user_id,
    Event.anonymous_id,
    Event.group_id,
    Event.previous_id,
    Event.timestamp,
    Event.received_at,
    Event.properties,
    Event.traits,
    Event.context,
)
_FOLLOWING = """
SELECT id, kind, state, run_at, payload FROM jobs
WHERE workspace_id = :workspace_id AND serial_key = :serial_key AND id > :id
  AND state IN ('ready', 'running')
ORDER BY id LIMIT :limit
"""
_TAKE = "DELETE FROM jobs WHERE id IN :ids AND state = 'ready' RETURNING id"


@dataclass(frozen=True, slots=True)
class _Queued:
    """A ready job behind the running one, whose events a run may take over."""

    id: int
    event_ids: list[int]


class Pipeline:
    """The stages accepted events pass through, with what they keep per process."""

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self.database = database
        self.clock = clock
        self.tracking_plans = TrackingPlans(database, settings, clock)

    def registry(self) -> Registry:
        """Every kind of job Clarion runs, with its handler."""
        registry = Registry()
        registry.add(PROCESS_EVENTS, self.process_events)
        return registry

    async def process_events(self, context: JobContext) -> None:
        """Review, enrich and apply one batch of stored events (and those of the ready jobs
        queued behind it under its serial key), exactly once and in order."""
        workspace_id = context.job.workspace_id
        event_ids = _event_ids(context.job.payload)
        if event_ids is None:
            raise PermanentFailure(f"payload has no list of event ids: {context.job.payload}")
        async with self.database.read_session() as session:
            queued = await self._queued_behind(session, context, len(event_ids))
            wanted = event_ids + [i for job in queued for i in job.event_ids]
            events = await _load_events(session, workspace_id, wanted)
        review = await self.tracking_plans.review(workspace_id, events)
        async with self.database.write_session() as session:
            await context.complete(session)  # first: it proves (and locks) our lease
            taken = await _take(session, queued)
            if len(taken) < len(queued):  # some went away meanwhile: theirs is not our work
                mine = set(event_ids).union(*(job.event_ids for job in taken))
                review = _only(review, mine)
            await self.tracking_plans.record(session, review)
            await profiles.apply_events(
                session, workspace_id=workspace_id, events=review.events, now=self.clock.now()
            )
            await session.commit()

    async def _queued_behind(
        self, session: AsyncSession, context: JobContext, events: int
    ) -> list[_Queued]:
        """The ready, due jobs right behind this one under its serial key, in order, stopping
        at the first that is not (or at `MAX_EVENTS_PER_RUN` events)."""
        job = context.job
        if job.serial_key is None or job.attempts > 1:
            return []
        rows = await session.execute(
            text(_FOLLOWING).columns(
                id=BigId, kind=String, state=String, run_at=UTCDateTime, payload=JSONDocument
            ),
            {
                "workspace_id": job.workspace_id,
                "serial_key": job.serial_key,
                "id": job.id,
                "limit": _FOLLOWING_JOBS,
            },
        )
        now = context.clock.now()
        queued: list[_Queued] = []
        for row in rows:
            ids = _event_ids(row.payload)
            if row.kind != PROCESS_EVENTS or row.state != "ready" or row.run_at > now:
                break
            if ids is None or events + len(ids) > MAX_EVENTS_PER_RUN:
                break
            queued.append(_Queued(row.id, ids))
            events += len(ids)
        return queued

    async def close(self) -> None:
        """Release what the stages hold (HTTP clients, cache subscriptions)."""
        await self.tracking_plans.close()


def _event_ids(payload: dict[str, Any]) -> list[int] | None:
    ids = payload.get("event_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        return None
    return ids


async def _load_events(
    session: AsyncSession, workspace_id: int, event_ids: Sequence[int]
) -> list[EventRecord]:
    """The stored events, in id order, as records (columns only: no ORM objects)."""
    events: list[EventRecord] = []
    ordered = sorted(set(event_ids))
    for start in range(0, len(ordered), 900):
        rows = await session.execute(
            select(*_EVENT_COLUMNS)
            .where(Event.workspace_id == workspace_id, Event.id.in_(ordered[start : start + 900]))
            .order_by(Event.id)
        )
        events += [
            EventRecord(
                id=row.id,
                workspace_id=row.workspace_id,
                source_id=row.source_id,
                message_id=row.message_id,
                type=row.type,
                name=row.name,
                user_id=row.user_id,
                anonymous_id=row.anonymous_id,
                group_id=row.group_id,
                previous_id=row.previous_id,
                timestamp=row.timestamp,
                received_at=row.received_at,
                properties=row.properties or {},
                traits=row.traits or {},
                context=row.context or {},
            )
            for row in rows
        ]
    return events


async def _take(session: AsyncSession, queued: list[_Queued]) -> list[_Queued]:
    """Delete the queued jobs still ready, in the caller's transaction; those deleted.

    One that is no longer ready was discarded or parked dead meanwhile, so it no longer
    holds back the ones after it; none can be running while the caller's job is live.
    """
    if not queued:
        return []
    ids: BindParameter[Any] = bindparam("ids", expanding=True)
    result = await session.execute(
        text(_TAKE).bindparams(ids).columns(id=BigId), {"ids": [job.id for job in queued]}
    )
    deleted = set(result.scalars())
    return [job for job in queued if job.id in deleted]


def _only(review: Review, event_ids: set[int]) -> Review:
    """The review narrowed to some of its events."""
    return replace(
        review,
        events=[e for e in review.events if e.id in event_ids],
        violations=[v for v in review.violations if v.event_id in event_ids],
        blocked=[i for i in review.blocked if i in event_ids],
    )
