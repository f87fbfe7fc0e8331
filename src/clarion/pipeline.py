"""The one way through, in code: what happens to accepted events, and which jobs exist.

For each batch of stored events (one `events.process` job, enqueued by the event writer
in the transaction that stored them) the pipeline:

1. reviews them against the workspace's tracking plan and enriches them, holding no
   database transaction (enrichment may call HTTP endpoints);
2. in one write transaction, records the plan's violations, applies the events to profiles
   (identity resolution, traits, computed traits, timeline) and completes the job, so a
   crash at any point leaves the batch either wholly applied or not at all.

Later stages (segments, journeys) join step 2, in that order.
"""

from __future__ import annotations

from sqlalchemy import select

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.jobs.worker import JobContext, PermanentFailure, Registry
from clarion.core.settings import Settings
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from clarion.ingest.plans import TrackingPlans
from clarion.ingest.records import EventRecord
from clarion.profiles import service as profiles


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
        """Review, enrich and apply one batch of stored events, exactly once."""
        workspace_id = context.job.workspace_id
        event_ids = context.job.payload.get("event_ids")
        if not isinstance(event_ids, list) or not all(isinstance(i, int) for i in event_ids):
            raise PermanentFailure(f"payload has no list of event ids: {context.job.payload}")
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(Event)
                .where(Event.workspace_id == workspace_id, Event.id.in_(event_ids))
                .order_by(Event.id)
            )
            events = [EventRecord.from_row(row) for row in rows]
        review = await self.tracking_plans.review(workspace_id, events)
        async with self.database.write_session() as session:
            await self.tracking_plans.record(session, review)
            await profiles.apply_events(
                session, workspace_id=workspace_id, events=review.events, now=self.clock.now()
            )
            await context.complete(session)
            await session.commit()

    async def close(self) -> None:
        """Release what the stages hold (HTTP clients, cache subscriptions)."""
        await self.tracking_plans.close()
