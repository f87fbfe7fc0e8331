"""The one way through, in code: what happens to accepted events, and which jobs exist.

For each batch of stored events (one `events.process` job, enqueued by the event writer
in the transaction that stored them) the pipeline:

1. reviews them against the workspace's tracking plan and enriches them, holding no
   database transaction (enrichment may call HTTP endpoints);
2. in one write transaction, records the plan's violations, applies the events to profiles
   (identity resolution, traits, computed traits, timeline), re-evaluates the segments they
   can change for the profiles they touched (entries and exits, `Segment Entered` /
   `Segment Exited` events, lapse checks scheduled) and completes the job, so a crash at any
   point leaves the batch either wholly applied or not at all.

A job takes over the ready jobs queued behind it under its serial key (one shard of
senders), up to `MAX_EVENTS_PER_RUN` events: their events join its batch and the jobs are
deleted in the same transaction that applies them. No other worker can run those jobs
meanwhile (only the oldest live job of a serial key is ever claimed, and this one is live
until it commits), so each sender's events stay in order and are applied exactly once, while
one run does the work of many small jobs. On SQLite, whose single writer makes parallel runs
pointless, a run whose own queue is short (light load) also takes over the queues of the
other keys whose first live job is still ready when it writes (checked inside that write
transaction), so one run serves every waiting sender instead of one run per shard: that is
what keeps its latency low. A retried job takes over nothing, so an event
that keeps failing fails only its own job; from its third attempt that job is applied event
by event, and an event failing alone is parked as a dead job of its own.

Segments also run two kinds of jobs of their own: `segments.lapse` re-evaluates one profile
when time alone may change a membership, `segments.recompute` one segment or a workspace's
(hourly, and right after a segment is created or its rule changes). Campaigns run
`campaigns.launch` (snapshot an audience), `campaigns.dispatch` (ask messaging for a
chunk of messages) and `campaigns.conversions` (mark the messages whose recipients reached
the goal). Journeys come third in step 2: the batch's events hand merged profiles' runs to
their survivors, enter profiles into live journeys, end runs and wake runs waiting for them,
and move the runs they start or wake up to their next wait (`journeys.runtime`);
`journeys.step` jobs move batches of runs on when their waits end.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from sqlalchemy import BindParameter, String, bindparam, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns import conversions
from clarion.campaigns import dispatch as campaigns
from clarion.core.clock import Clock
from clarion.core.crypto import Vault
from clarion.core.database import BigId, Database, JSONDocument, UTCDateTime
from clarion.core.jobs.queue import NewJob, park
from clarion.core.jobs.worker import JobContext, PermanentFailure, Registry
from clarion.core.settings import Settings
from clarion.ingest.internal import OwnEvents, is_activity, process_later
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.plans import TrackingPlans
from clarion.ingest.plans.review import Review
from clarion.ingest.records import EventRecord
from clarion.journeys import alerts as journey_alerts
from clarion.journeys import runtime
from clarion.journeys import steps as journey_steps
from clarion.journeys.runtime import Runtime
from clarion.messaging import delivery
from clarion.messaging.channel_config import ChannelPool
from clarion.messaging.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from clarion.messaging.sending import Composer
from clarion.messaging.tracking import LinkSigner
from clarion.profiles import service as profiles
from clarion.segments import aggregates, membership, recompute
from clarion.segments.catalog import Catalog, SegmentIndex
from clarion.segments.models import Segment

log = logging.getLogger(__name__)

# Events one run applies at most, its own job's and the ones it takes over. Bigger runs
# amortize the per-transaction cost further but hold SQLite's single writer longer.
MAX_EVENTS_PER_RUN = 1_000
_FOLLOWING_JOBS = 200  # queued jobs looked at per run
# Clarion's own events a transaction decides (`Segment Entered` / `Exited`, delivery
# feedback) are applied in it, and what they cause in turn (a segment of those who entered
# another) for this many rounds in all; anything left after them goes through processing
# jobs.
OWN_EVENT_ROUNDS = 3
# A processing job failing this many times is then applied event by event: an event that
# fails alone is parked as a dead job of its own, and the rest go on (`_apply_one_by_one`).
ISOLATE_AFTER_ATTEMPTS = 2

_EVENT_COLUMNS = (
    "id, workspace_id, source_id, message_id, type, name, user_id, anonymous_id, group_id,"
    " previous_id, timestamp, received_at, properties, traits, context"
)
# On PostgreSQL the ids go as one array, each looked up by primary key alone: a LATERAL
# subquery behind OFFSET 0, the workspace checked outside it, keeps the planner from
# reading the workspace's events (or its index) instead, which it prefers while a freshly
# loaded table has no statistics yet.
_EVENTS_POSTGRES = text(
    f"SELECT e.* FROM unnest(CAST(:ids AS bigint[])) AS wanted(id) CROSS JOIN LATERAL"  # noqa: S608
    f" (SELECT {_EVENT_COLUMNS} FROM events WHERE events.id = wanted.id OFFSET 0) AS e"
    f" WHERE e.workspace_id = :workspace_id ORDER BY e.id"
)
_EVENTS_SQLITE = text(
    f"SELECT {_EVENT_COLUMNS} FROM events"  # noqa: S608 - constant column names
    " WHERE workspace_id = :workspace_id AND id IN :ids ORDER BY id"
).bindparams(bindparam("ids", expanding=True))
# On SQLite a run whose own queue holds fewer events than this also takes over other keys'
# queues. Not on PostgreSQL: there concurrent runs would read the same queues and all but one
# would lose the race (measured: latency p99 3.3 s against 2.2 s at 1,000 events/s).
CROSS_KEY_BELOW = 200
# Live jobs with a serial key in the run's workspace, in id order: those behind the run's own
# job under its key, or those under every key.
_LIVE = """
SELECT id, serial_key, kind, state, run_at, payload FROM jobs
WHERE workspace_id = :workspace_id AND serial_key IS NOT NULL {same_key}
  AND state IN ('ready', 'running')
ORDER BY id LIMIT :limit
"""
_SAME_KEY = "AND serial_key = :serial_key AND id > :id"
_STATES = "SELECT id, state, payload FROM jobs WHERE id IN :ids"
_TAKE = "DELETE FROM jobs WHERE id IN :ids AND state = 'ready'"


@dataclass(frozen=True, slots=True)
class _Queued:
    """A ready job whose events a run may take over, and the serial key it waits under."""

    id: int
    serial_key: str
    event_ids: list[int]


class Pipeline:
    """The stages accepted events pass through, with what they keep per process."""

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self.database = database
        self.clock = clock
        self.tracking_plans = TrackingPlans(database, settings, clock)
        self.segments = Catalog()
        self.journeys = Runtime(self.segments)
        self.delivery = messaging_delivery(database, settings, clock, self.process_own_events)
        self.journey_alerts = journey_alerts.Alerts(
            self.journeys.plans, self.delivery.composer.channels
        )

    def registry(self) -> Registry:
        """Every kind of job Clarion runs, with its handler."""
        registry = Registry()
        registry.add(PROCESS_EVENTS, self.process_events)
        registry.add(profiles.PROFILES_CHANGED, self.profiles_changed)
        registry.add(membership.LAPSE, self.reevaluate_profile)
        registry.add(recompute.RECOMPUTE, self.recompute_segments)
        registry.add(campaigns.LAUNCH, campaigns.launch)
        registry.add(campaigns.DISPATCH, campaigns.dispatch)
        registry.add(conversions.CONVERSIONS, conversions.run_conversions)
        registry.add(journey_steps.STEP, self.journeys.step)
        registry.add(runtime.SCHEDULE, self.journeys.run_schedule)
        registry.add(runtime.DATES, self.journeys.run_dates)
        registry.add(journey_alerts.CHECK, self.journey_alerts.check)
        registry.add(journey_alerts.NOTIFY, self.journey_alerts.notify)
        registry.add(delivery.DELIVER, self.delivery.deliver)
        return registry

    async def profiles_changed(self, context: JobContext) -> None:
        """Re-evaluate the segments of profiles an upsert changed (API, CSV import), and
        give the journey runs of profiles it merged away to their survivors."""
        workspace_id = context.job.workspace_id
        try:
            changed = profiles.changed_profiles(context.job.payload)
        except (TypeError, ValueError, AttributeError) as error:
            raise PermanentFailure(f"bad payload: {context.job.payload}") from error
        origin = _origin(context.job.payload.get("origin"))
        async with self.database.write_session() as session:
            await context.complete(session)
            index = await self.segments.load(session, workspace_id)
            now = self.clock.now()
            counts = membership.MemberCounts()
            decided = await membership.evaluate_profiles(
                session,
                workspace_id=workspace_id,
                index=index,
                touched=_touched(changed),
                absorbed=changed.absorbed,
                now=now,
                cause="realtime",
                hand_back=True,
                origin=origin,
                counts=counts,
            )
            await self.process_own_events(
                session, workspace_id, decided.emitted, now, index, counts=counts
            )
            await self.journeys.on_merges(
                session, workspace_id=workspace_id, absorbed=changed.absorbed, now=now
            )
            await counts.write(session)
            await session.commit()

    async def reevaluate_profile(self, context: JobContext) -> None:
        """Re-evaluate one profile's segments when time alone may have changed them."""
        workspace_id = context.job.workspace_id
        try:
            profile_id = uuid.UUID(str(context.job.payload["profile_id"]))
        except (KeyError, ValueError) as error:
            raise PermanentFailure(f"payload names no profile: {context.job.payload}") from error
        async with self.database.write_session() as session:
            await context.complete(session)
            index = await self.segments.load(session, workspace_id)
            now = self.clock.now()
            counts = membership.MemberCounts()
            decided = await membership.evaluate_profiles(
                session,
                workspace_id=workspace_id,
                index=index,
                touched={profile_id: membership.Touched(everything=True)},
                absorbed={},
                now=now,
                cause="schedule",
                hand_back=True,
                counts=counts,
            )
            await self.process_own_events(
                session, workspace_id, decided.emitted, now, index, counts=counts
            )
            await counts.write(session)
            await session.commit()

    async def recompute_segments(self, context: JobContext) -> None:
        """Recompute one segment (`segment_id`) or every segment of the workspace."""
        workspace_id = context.job.workspace_id
        segment_id = context.job.payload.get("segment_id")
        async with self.database.write_session() as session:
            await context.complete(session)
            now = self.clock.now()
            if segment_id is None:
                await recompute.recompute_workspace(
                    session, workspace_id=workspace_id, catalog=self.segments, now=now
                )
            else:
                segment = await session.get(Segment, segment_id)
                if segment is not None and segment.workspace_id == workspace_id:
                    await recompute.recompute_one(
                        session,
                        workspace_id=workspace_id,
                        segment=segment,
                        catalog=self.segments,
                        now=now,
                    )
            await session.commit()

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
            now = self.clock.now()
            counts = membership.MemberCounts()
            if context.job.attempts > ISOLATE_AFTER_ATTEMPTS:
                await self._apply_one_by_one(session, context, review, now, counts)
            else:
                await self._apply(session, workspace_id, review.events, now, counts)
            await counts.write(session)
            await session.commit()

    async def _apply(
        self,
        session: AsyncSession,
        workspace_id: int,
        events: Sequence[EventRecord],
        now: datetime,
        counts: membership.MemberCounts,
    ) -> None:
        """Apply reviewed events in the caller's transaction: to profiles, to the segments
        they can change (and Clarion's own events that decides), to journeys; the member
        counts' changes into `counts`, for the caller to write."""
        applied = await profiles.apply_events(
            session, workspace_id=workspace_id, events=events, now=now
        )
        index = await self.segments.load(session, workspace_id)
        decided = await membership.evaluate_profiles(
            session,
            workspace_id=workspace_id,
            index=index,
            touched=_touched(applied),
            absorbed=applied.absorbed,
            now=now,
            cause="realtime",
            hand_back=True,
            counts=counts,
        )
        await self.journeys.on_merges(
            session, workspace_id=workspace_id, absorbed=applied.absorbed, now=now
        )
        await self.journeys.on_events(
            session, workspace_id=workspace_id, events=applied.events, now=now
        )
        await self.process_own_events(
            session, workspace_id, decided.emitted, now, index, counts=counts
        )

    async def _apply_one_by_one(
        self,
        session: AsyncSession,
        context: JobContext,
        review: Review,
        now: datetime,
        counts: membership.MemberCounts,
    ) -> None:
        """Apply the events of a run that keeps failing one at a time, each in a savepoint:
        the others go on, in order, and each event that fails by itself is parked as a dead
        job of its own (`clarion jobs retry` once its cause is fixed), so that one event no
        code can apply holds back neither its batch nor the sender's later events. Failures
        of the database itself are raised: the run is retried whole."""
        workspace_id = context.job.workspace_id
        failed: list[tuple[int, str]] = []
        for event in review.events:
            attempt = membership.MemberCounts()  # kept only if its savepoint is
            try:
                async with session.begin_nested():
                    await self._apply(session, workspace_id, [event], now, attempt)
                counts.merge(attempt)
            except (OperationalError, InterfaceError, TimeoutError, ConnectionError):
                raise
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                failed.append((event.id, _described(exc)))
            except Exception as exc:  # whatever this one event made the code raise
                failed.append((event.id, _described(exc)))
        for event_id, error in failed:
            log.error(
                "event %s could not be applied (job %s, attempt %s); parked as a dead job: %s",
                event_id,
                context.job.id,
                context.job.attempts,
                error,
            )
            await park(
                session,
                NewJob(workspace_id, PROCESS_EVENTS, {"event_ids": [event_id]}),
                error=error,
                attempts=context.job.attempts,
                now=now,
            )

    async def process_own_events(
        self,
        session: AsyncSession,
        workspace_id: int,
        own: OwnEvents,
        now: datetime,
        index: SegmentIndex | None = None,
        *,
        counts: membership.MemberCounts | None = None,
    ) -> None:
        """Apply Clarion's own events about these canonical profiles, stored in this
        transaction without processing jobs (`Segment Entered` / `Exited`, delivery
        feedback): on the timelines, to the segments that read them and to journeys, as
        their processing job would have a moment later, without one per batch (at a first
        touch segment events outnumber the customer's; every email delivered makes one).
        What they decide in turn is applied for `OWN_EVENT_ROUNDS` rounds in all; the rest
        is left to processing jobs. With `counts`, the member counts' changes go there for
        the caller to write before it commits; else they are written now."""
        if not own:
            return
        if index is None:
            index = await self.segments.load(session, workspace_id)
        for _ in range(OWN_EVENT_ROUNDS):
            if not own:
                return
            applied = await profiles.apply_own_events(
                session, workspace_id=workspace_id, events=own, now=now
            )
            decided = await membership.evaluate_profiles(
                session,
                workspace_id=workspace_id,
                index=index,
                touched=_touched(applied),
                absorbed={},
                now=now,
                cause="realtime",
                hand_back=True,
                counts=counts,
            )
            await self.journeys.on_events(
                session, workspace_id=workspace_id, events=applied.events, now=now
            )
            own = decided.emitted
        await process_later(session, [event for batch in own.values() for event in batch], now=now)

    async def _queued_behind(
        self, session: AsyncSession, context: JobContext, events: int
    ) -> list[_Queued]:
        """The ready, due jobs a run takes over, up to `MAX_EVENTS_PER_RUN` events: those
        right behind its own job under its serial key and, on SQLite while they hold fewer
        than `CROSS_KEY_BELOW` events, the queues of other keys whose first job is ready.
        Under each key they are a prefix of its live jobs: nothing past a job not ready."""
        job = context.job
        if job.serial_key is None or job.attempts > 1:
            return []
        now = context.clock.now()
        queued: list[_Queued] = []
        stopped: set[str] = set()  # keys with a job not to be taken, nor anything after it
        for every_key in (False, True):
            if every_key and (not self.database.is_sqlite or events >= CROSS_KEY_BELOW):
                break
            rows = await session.execute(
                text(_LIVE.format(same_key="" if every_key else _SAME_KEY)).columns(
                    id=BigId,
                    serial_key=String,
                    kind=String,
                    state=String,
                    run_at=UTCDateTime,
                    payload=JSONDocument,
                ),
                {
                    "workspace_id": job.workspace_id,
                    "serial_key": job.serial_key,
                    "id": job.id,
                    "limit": _FOLLOWING_JOBS,
                },
            )
            for row in rows:
                if row.serial_key in stopped or (every_key and row.serial_key == job.serial_key):
                    continue
                ids = _event_ids(row.payload)
                if (
                    row.kind != PROCESS_EVENTS
                    or row.state != "ready"
                    or row.run_at > now
                    or ids is None
                    or events + len(ids) > MAX_EVENTS_PER_RUN
                ):
                    stopped.add(row.serial_key)
                    continue
                queued.append(_Queued(row.id, row.serial_key, ids))
                events += len(ids)
        return sorted(queued, key=lambda queued_job: queued_job.id)

    async def close(self) -> None:
        """Release what the stages hold (HTTP clients, cache subscriptions, connections
        to providers)."""
        await self.tracking_plans.close()
        await self.delivery.close()


def messaging_delivery(
    database: Database,
    settings: Settings,
    clock: Clock,
    process_own: delivery.ProcessOwnEvents | None = None,
) -> delivery.Delivery:
    """Message delivery as this process runs it: its channel connections, link signer and
    send-rate buckets (in Redis when configured, so every worker shares them), applying
    its feedback events with `process_own` when given."""
    keys = settings.secret_keys()
    composer = Composer(
        channels=ChannelPool(Vault(keys), settings.outbound_policy()),
        signer=LinkSigner(keys.current, keys.previous),
        public_url=settings.public_url,
    )
    limiter: RateLimiter = (
        RedisRateLimiter(Redis.from_url(settings.redis_url))
        if settings.redis_url
        else LocalRateLimiter()
    )
    return delivery.Delivery(database, clock, composer, limiter, process_own)


def _origin(raw: Any) -> dict[str, int] | None:
    """The journey run a `profiles.changed` job names as its cause (`journey_id`,
    `journey_run_id`), when it names one whole."""
    if not isinstance(raw, dict):
        return None
    kept = {key: raw.get(key) for key in ("journey_id", "journey_run_id")}
    if not all(type(value) is int for value in kept.values()):
        return None
    return cast(dict[str, int], kept)


def _touched(applied: profiles.AppliedBatch) -> dict[uuid.UUID, membership.Touched]:
    """What segments re-evaluate for each profile the batch changed."""
    touched: dict[uuid.UUID, membership.Touched] = {}
    for profile_id in applied.profile_ids():
        events = applied.events.get(profile_id, [])
        touched[profile_id] = membership.Touched(
            events=[
                aggregates.TrackEvent(event.name or "", event.timestamp, event.properties)
                for event in events
                if event.type == "track"
            ],
            trait_keys=frozenset(applied.trait_keys.get(profile_id, ())),
            seen=any(is_activity(event.source_id) for event in events),
            everything=profile_id in applied.rebuilt or profile_id in applied.created,
            rebuild=profile_id in applied.rebuilt,
        )
    return touched


def _described(exc: BaseException) -> str:
    """An exception as a dead job's error says it."""
    return "".join(traceback.format_exception_only(exc)).strip()[:4000]


def _event_ids(payload: dict[str, Any]) -> list[int] | None:
    ids = payload.get("event_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        return None
    return ids


async def _load_events(
    session: AsyncSession, workspace_id: int, event_ids: Sequence[int]
) -> list[EventRecord]:
    """The stored events, in id order, as records.

    Plain SQL, converting the driver's values here: SQLAlchemy's per-value result processing
    costs more than the query on a batch of a thousand events.
    """
    events: list[EventRecord] = []
    ordered = sorted(set(event_ids))
    sources: dict[Any, uuid.UUID] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _EVENTS_POSTGRES if postgres else _EVENTS_SQLITE
    for start in range(0, len(ordered), 900):
        rows = await session.execute(
            statement, {"workspace_id": workspace_id, "ids": ordered[start : start + 900]}
        )
        for row in rows:
            source_id = sources.get(row[2])
            if source_id is None:
                source_id = sources[row[2]] = uuid.UUID(str(row[2]))
            events.append(
                EventRecord(
                    id=row[0],
                    workspace_id=row[1],
                    source_id=source_id,
                    message_id=row[3],
                    type=row[4],
                    name=row[5],
                    user_id=row[6],
                    anonymous_id=row[7],
                    group_id=row[8],
                    previous_id=row[9],
                    timestamp=_instant(row[10]),
                    received_at=_instant(row[11]),
                    properties=_document(row[12]),
                    traits=_document(row[13]),
                    context=_document(row[14]),
                )
            )
    return events


def _instant(raw: Any) -> datetime:
    """A `UTCDateTime` value as the driver gives it: naive UTC text on SQLite."""
    if isinstance(raw, str):
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    moment: datetime = raw
    return moment.astimezone(UTC)


def _document(raw: Any) -> dict[str, Any]:
    """A `JSONDocument` value as the driver gives it: text on SQLite, decoded on PostgreSQL."""
    if raw is None:
        return {}
    document: dict[str, Any] = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return document


async def _take(session: AsyncSession, queued: list[_Queued]) -> list[_Queued]:
    """Delete, in the caller's transaction, the queued jobs that may still be taken; those.

    Under each key they are taken in order up to one now running elsewhere (its worker, not
    this run, goes on with that queue). One gone or dead meanwhile was finished, discarded or
    parked, so it no longer holds back the ones after it. A job is recognized by its events,
    not only its id, which SQLite may have given to a newer job since. On PostgreSQL the
    states are read under row locks, on SQLite inside its single writer's transaction: they
    cannot change before the commit; on PostgreSQL one held by another run stops its key.
    """
    if not queued:
        return []
    ids: BindParameter[Any] = bindparam("ids", expanding=True)
    sqlite = session.get_bind().dialect.name == "sqlite"
    # On PostgreSQL a row another run holds is skipped, never waited for (no lock cycles).
    lock = "" if sqlite else " ORDER BY id FOR UPDATE SKIP LOCKED"
    rows = await session.execute(
        text(_STATES + lock).bindparams(ids).columns(id=BigId, state=String, payload=JSONDocument),
        {"ids": [job.id for job in queued]},
    )
    # SQLite hands a deleted job's id to the next job enqueued: a row with the id but other
    # events is another job, and the one that was read is gone.
    states = {row.id: (row.state, _event_ids(row.payload)) for row in rows}
    taken: list[_Queued] = []
    stopped: set[str] = set()
    for job in queued:
        state, event_ids = states.get(job.id, (None, None))
        if state is None and not sqlite:  # gone, or held by another run: unknown
            stopped.add(job.serial_key)
        if event_ids != job.event_ids:
            continue
        if state == "running":
            stopped.add(job.serial_key)
        elif state == "ready" and job.serial_key not in stopped:
            taken.append(job)
    if taken:
        await session.execute(text(_TAKE).bindparams(ids), {"ids": [job.id for job in taken]})
    return taken


def _only(review: Review, event_ids: set[int]) -> Review:
    """The review narrowed to some of its events."""
    return replace(
        review,
        events=[e for e in review.events if e.id in event_ids],
        violations=[v for v in review.violations if v.event_id in event_ids],
        blocked=[i for i in review.blocked if i in event_ids],
    )
