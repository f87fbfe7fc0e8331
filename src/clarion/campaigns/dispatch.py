"""Sending a campaign through durable jobs: a launch job snapshots the audience, dispatch
jobs ask messaging for the messages, chunk by chunk.

`campaigns.launch` (at the campaign's `launch_at`) checks the template and the channel
again (stopping the campaign, with its `problem`, when either went away) and reads the
audience page by page, each page in a transaction of its own that inserts its recipients
(with their send times) and moves the campaign's snapshot cursor: a crash resumes from the
last page written, and a page written twice inserts nothing twice. After `PAGES_PER_RUN`
pages the job hands over to a new one (same transaction); the audience's last page
completes the job and enqueues the first dispatch.

`campaigns.dispatch` takes, in one transaction, up to `CHUNK` pending recipients due within
`HORIZON` (in send time order), calls `messaging.delivery.queue_messages` with the
idempotency key `campaign:<id>:<profile id>`, marks them queued with their message ids, and
completes itself while enqueuing the next dispatch (at once, or when the next recipient is
nearly due). A campaign that is not sending (paused, cancelled) is not dispatched. Once its
recipients are all queued or skipped it stays `sending` while any of its messages waits in
messaging (`queued`: for its time, quiet hours, a retry; or `sending`), so that cancel can
still refuse them: the dispatch looks again when the first is due (`RECHECK` at the
soonest, `STUCK` for one long overdue), and marks the campaign `sent` when none waits.
Every step reads the campaign under a row lock (PostgreSQL) or SQLite's single writer, so
pause, resume and cancel never interleave with a dispatch half-way.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns import audience as audiences
from clarion.campaigns import channels, timing
from clarion.campaigns.models import Campaign, CampaignRecipient
from clarion.core.errors import Conflict, NotFound
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import JobContext, PermanentFailure
from clarion.messaging import feedback, policy
from clarion.messaging import templates as message_templates
from clarion.messaging.delivery import MessageRequest, queue_messages
from clarion.messaging.models import Message
from clarion.profiles import queries as profiles

LAUNCH = "campaigns.launch"  # job kind: snapshot one campaign's audience
DISPATCH = "campaigns.dispatch"  # job kind: ask for one chunk of a campaign's messages
PRIORITY = 12  # after event processing, next to message delivery
SNAPSHOT_PAGE = 1_000  # audience profiles read per launch transaction
PAGES_PER_RUN = 50  # then the launch goes on in a new job, well within a job's time-out
CHUNK = 1_000  # recipients asked for per dispatch transaction
HORIZON = timedelta(minutes=1)  # recipients due this soon are asked for now
RECHECK = timedelta(seconds=5)  # at least this long between looks at messages still waiting
STUCK = timedelta(minutes=10)  # overdue this long, a message is looked at this rarely
WAITING = ("queued", "sending")  # message statuses that keep a campaign sending
ORIGIN = "campaign"


def idempotency_key(campaign_id: int, profile_id: uuid.UUID) -> str:
    """The idempotency key of the campaign's message to the profile."""
    return f"campaign:{campaign_id}:{profile_id}"


async def schedule_launch(session: AsyncSession, *, campaign: Campaign, now: datetime) -> None:
    """Enqueue the campaign's launch job for its current schedule, at its `launch_at`."""
    await enqueue(
        session,
        [
            NewJob(
                workspace_id=campaign.workspace_id,
                kind=LAUNCH,
                payload={"campaign_id": campaign.id, "version": campaign.schedule_version},
                run_at=campaign.launch_at,
                priority=PRIORITY,
                dedupe_key=f"campaign:{campaign.id}:{campaign.schedule_version}",
            )
        ],
        now=now,
    )


async def schedule_dispatch(
    session: AsyncSession, *, campaign: Campaign, run_at: datetime, now: datetime
) -> None:
    """Enqueue a dispatch of the campaign at `run_at`, unless one is already waiting."""
    await enqueue(
        session,
        [
            NewJob(
                workspace_id=campaign.workspace_id,
                kind=DISPATCH,
                payload={"campaign_id": campaign.id},
                run_at=run_at,
                priority=PRIORITY,
                dedupe_key=f"campaign:{campaign.id}",
            )
        ],
        now=now,
    )


async def _locked(session: AsyncSession, workspace_id: int, campaign_id: int) -> Campaign | None:
    """The campaign read afresh, locked FOR UPDATE on PostgreSQL; None when it is gone."""
    query = (
        select(Campaign)
        .where(Campaign.workspace_id == workspace_id, Campaign.id == campaign_id)
        .execution_options(populate_existing=True)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    campaign: Campaign | None = await session.scalar(query)
    return campaign


def _campaign_id(payload: dict[str, Any]) -> int:
    campaign_id = payload.get("campaign_id")
    if not isinstance(campaign_id, int) or isinstance(campaign_id, bool):
        raise PermanentFailure(f"payload names no campaign: {payload}")
    return campaign_id


async def launch(context: JobContext) -> None:
    """Snapshot the campaign's audience into recipients, a page per transaction, then
    enqueue its first dispatch (see the module docstring). A stale job (the campaign was
    rescheduled or cancelled since) does nothing."""
    campaign_id = _campaign_id(context.job.payload)
    version = context.job.payload.get("version")
    for page in range(1, PAGES_PER_RUN + 1):
        async with context.database.write_session() as session:
            finished = await _launch_step(
                session, context, campaign_id, version, last=page == PAGES_PER_RUN
            )
            await session.commit()
        if finished:
            return


async def _launch_step(
    session: AsyncSession, context: JobContext, campaign_id: int, version: Any, *, last: bool
) -> bool:
    """One page of the launch; whether the job completed (in this transaction). The `last`
    page of a run that is not the audience's last hands over to a new launch job."""
    now = context.clock.now()
    campaign = await _locked(session, context.job.workspace_id, campaign_id)
    live = (
        campaign is not None
        and campaign.schedule_version == version
        and campaign.state in ("scheduled", "sending", "paused")
    )
    if campaign is None or not live or campaign.snapshot_done:
        if campaign is not None and live and campaign.state == "sending":
            await schedule_dispatch(session, campaign=campaign, run_at=now, now=now)
        await context.complete(session)
        return True
    if campaign.launched_at is None and not await _start(session, campaign, now):
        await context.complete(session)
        return True
    try:
        found, next_cursor = await audiences.page(
            session,
            workspace_id=campaign.workspace_id,
            audience=campaign.audience,
            cursor=campaign.snapshot_cursor,
            limit=SNAPSHOT_PAGE,
            entered_by=campaign.launched_at or now,
        )
    except NotFound:
        segment = campaign.audience.get("segment_id")
        await _stop(session, campaign, f"not launched: segment {segment} was deleted", now)
        await context.complete(session)
        return True
    campaign.audience_size += await _add_recipients(session, campaign, found, now)
    campaign.snapshot_cursor = next_cursor
    campaign.updated_at = now
    if next_cursor is not None:
        if not last:
            return False
        await context.complete(session)
        await schedule_launch(session, campaign=campaign, now=now)
        return True
    campaign.snapshot_done = True
    if campaign.audience_size == 0:
        await _stop(session, campaign, "the audience was empty at launch", now)
    else:
        await schedule_dispatch(session, campaign=campaign, run_at=now, now=now)
    await context.complete(session)
    return True


async def _start(session: AsyncSession, campaign: Campaign, now: datetime) -> bool:
    """Begin the launch: fix the template version and start sending; False (the campaign
    stopped, saying why) when its template is gone or archived, or it has no channel of the
    template's kind to send through (the one it names was deleted, the default too)."""
    try:
        template, version = await message_templates.current_version(
            session, workspace_id=campaign.workspace_id, template_id=campaign.template_id
        )
    except (NotFound, Conflict) as error:
        await _stop(session, campaign, f"not launched: {error.detail}", now)
        return False
    # Checked here, not left to delivery: messages naming a deleted channel cannot even be
    # written, and without a default every one of them would fail.
    if await _stopped_without_channel(session, campaign, template.channel, "not launched", now):
        return False
    campaign.template_version_id = version.id
    campaign.channel, campaign.category = template.channel, template.category
    campaign.topic_id = template.topic_id
    campaign.launched_at = now
    if campaign.state == "scheduled":
        campaign.state = "sending"
    return True


async def _stopped_without_channel(
    session: AsyncSession, campaign: Campaign, kind: str, stage: str, now: datetime
) -> bool:
    """Stop the campaign ("<stage>: channel N was deleted", ...) when it has no channel of
    `kind` to send through; whether it stopped."""
    problem = await channels.sending_problem(
        session, workspace_id=campaign.workspace_id, channel_id=campaign.channel_id, kind=kind
    )
    if problem is None:
        return False
    await _stop(session, campaign, f"{stage}: {problem}", now)
    return True


async def _stop(session: AsyncSession, campaign: Campaign, problem: str, now: datetime) -> None:
    """Cancel the campaign by itself, saying why; its pending recipients are skipped."""
    campaign.state, campaign.problem = "cancelled", problem
    campaign.finished_at = campaign.updated_at = now
    await skip_pending(session, campaign=campaign, reason=problem[:64], now=now)


async def _add_recipients(
    session: AsyncSession, campaign: Campaign, profile_ids: list[uuid.UUID], now: datetime
) -> int:
    """Insert the profiles not yet recipients, each with its send time; how many."""
    if not profile_ids:
        return 0
    moments = await _moments(session, campaign, profile_ids, now)
    slots = dict(campaign.slots)
    rows = []
    for profile_id in profile_ids:
        moment = moments[profile_id]
        key = moment.isoformat()
        position = slots.get(key, 0)
        slots[key] = position + 1
        rows.append(
            {
                "campaign_id": campaign.id,
                "profile_id": profile_id,
                "workspace_id": campaign.workspace_id,
                "send_at": moment + timing.throttle_offset(position, campaign.throttle_per_minute),
                "state": "pending",
                "message_id": None,
                "reason": None,
                "updated_at": now,
            }
        )
    campaign.slots = slots
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert(CampaignRecipient)
        .on_conflict_do_nothing(index_elements=["campaign_id", "profile_id"])
        .returning(CampaignRecipient.profile_id),
        rows,
    )
    return len(result.all())


async def _moments(
    session: AsyncSession, campaign: Campaign, profile_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, datetime]:
    """When each profile is due before the throttle: the campaign's moment, or in local
    time the day's wall time in the profile's zone (see `timing.local_send_at`)."""
    if campaign.send_mode != "local":
        # A launch that ran late (a busy worker) spaces its throttle from when it ran.
        known = [m for m in (campaign.send_at, campaign.launched_at) if m is not None]
        return dict.fromkeys(profile_ids, max(known, default=now))
    assert campaign.local_date is not None and campaign.local_time is not None
    assert campaign.launch_at is not None
    day = date.fromisoformat(campaign.local_date)
    at = policy.parse_clock(campaign.local_time)
    found = await policy.get_policy(session, workspace_id=campaign.workspace_id)
    fallback = found.default_timezone if found is not None else "UTC"
    views = await profiles.views_by_id(
        session, workspace_id=campaign.workspace_id, profile_ids=profile_ids
    )
    moments = {}
    for profile_id in profile_ids:
        view = views.get(profile_id)
        named = view.profile.traits.get("timezone") if view is not None else None
        where = timing.zone(named, fallback)
        moments[profile_id] = timing.local_send_at(day, at, where, launch_at=campaign.launch_at)
    return moments


async def dispatch(context: JobContext) -> None:
    """Ask for the next chunk of the campaign's messages and enqueue the dispatch after it
    (see the module docstring); nothing for a campaign that is not sending."""
    campaign_id = _campaign_id(context.job.payload)
    async with context.database.write_session() as session:
        # The campaign's row first, then the jobs': every campaign transaction locks in that
        # order (a launch enqueues a dispatch while holding the campaign), so none deadlock.
        campaign = await _locked(session, context.job.workspace_id, campaign_id)
        await context.complete(session)
        if campaign is not None and campaign.state == "sending":
            await _dispatch_chunk(session, campaign, context.clock.now())
        await session.commit()


async def _dispatch_chunk(session: AsyncSession, campaign: Campaign, now: datetime) -> None:
    """Queue the messages of up to `CHUNK` recipients due within `HORIZON` (later by the
    pauses so far), then enqueue the next dispatch; once every recipient is queued or
    skipped, mark the campaign sent when none of its messages waits any more, else look
    again when the first one is due. Stop it, saying why, when the channel it names was
    deleted."""
    shift = timedelta(seconds=campaign.shift_seconds)
    pending = (
        CampaignRecipient.campaign_id == campaign.id,
        CampaignRecipient.state == "pending",
    )
    due = list(
        (
            await session.scalars(
                select(CampaignRecipient)
                .where(*pending, CampaignRecipient.send_at <= now + HORIZON - shift)
                .order_by(CampaignRecipient.send_at, CampaignRecipient.profile_id)
                .limit(CHUNK)
            )
        ).all()
    )
    # Deleted mid-send, the channel it names would make every message unwritable (and the
    # dispatch retry until it died); without a default, messages fail one by one.
    if (
        due
        and campaign.channel_id is not None
        and await _stopped_without_channel(session, campaign, campaign.channel, "stopped", now)
    ):
        return
    if due:
        await _queue(session, campaign, due, shift, now)
    following = await session.scalar(select(func.min(CampaignRecipient.send_at)).where(*pending))
    if following is not None:
        run_at = now if len(due) == CHUNK else max(now, following + shift - HORIZON)
        await schedule_dispatch(session, campaign=campaign, run_at=run_at, now=now)
        return
    if not campaign.snapshot_done:
        return  # the launch's last page enqueues the next dispatch
    first_waiting = await _first_waiting(session, campaign)
    if first_waiting is None:
        campaign.state, campaign.finished_at, campaign.updated_at = "sent", now, now
        return
    # Deferred by quiet hours or waiting for a retry, a message may wait hours: until it
    # goes the campaign is sending, so that cancel still refuses it. One long overdue
    # (its delivery job dead, say) is looked at every `STUCK`, not every `RECHECK`.
    soonest = now + (STUCK if first_waiting < now - STUCK else RECHECK)
    run_at = max(soonest, first_waiting)
    await schedule_dispatch(session, campaign=campaign, run_at=run_at, now=now)


async def _queue(
    session: AsyncSession,
    campaign: Campaign,
    due: list[CampaignRecipient],
    shift: timedelta,
    now: datetime,
) -> None:
    """Ask messaging for the due recipients' messages and mark them queued with their ids."""
    assert campaign.template_version_id is not None  # set by the launch
    requests = [
        MessageRequest(
            profile_id=recipient.profile_id,
            template_id=campaign.template_id,
            template_version_id=campaign.template_version_id,
            channel=campaign.channel,
            idempotency_key=idempotency_key(campaign.id, recipient.profile_id),
            origin=ORIGIN,
            origin_id=str(campaign.id),
            channel_id=campaign.channel_id,
            category=campaign.category,
            topic_id=campaign.topic_id,
            priority=campaign.priority,
            send_after=recipient.send_at + shift,
        )
        for recipient in due
    ]
    message_ids = await queue_messages(
        session, workspace_id=campaign.workspace_id, requests=requests, now=now
    )
    for recipient, message_id in zip(due, message_ids, strict=True):
        recipient.state, recipient.message_id, recipient.updated_at = "queued", message_id, now


async def _first_waiting(session: AsyncSession, campaign: Campaign) -> datetime | None:
    """When the first of the campaign's messages still waiting (queued, or being sent and
    perhaps retried) is due; None when none waits."""
    first: datetime | None = await session.scalar(
        select(func.min(Message.send_after)).where(
            Message.workspace_id == campaign.workspace_id,
            Message.origin == ORIGIN,
            Message.origin_id == str(campaign.id),
            Message.status.in_(WAITING),
        )
    )
    return first


async def skip_pending(
    session: AsyncSession, *, campaign: Campaign, reason: str, now: datetime
) -> None:
    """Mark every pending recipient of the campaign skipped, with `reason`."""
    await session.execute(
        update(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.state == "pending",
        )
        .values(state="skipped", reason=reason, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def refuse_queued(
    session: AsyncSession, *, campaign: Campaign, reason: str, now: datetime
) -> int:
    """Refuse, with `reason`, the campaign's messages still queued (not yet being sent),
    through messaging's feedback (status and history); how many. Rows are locked in the
    order delivery locks them (PostgreSQL), so the two never deadlock."""
    refused = 0
    while True:
        query = (
            select(Message)
            .where(
                Message.workspace_id == campaign.workspace_id,
                Message.origin == ORIGIN,
                Message.origin_id == str(campaign.id),
                Message.status == "queued",
            )
            .order_by(Message.created_at, Message.id)
            .limit(CHUNK)
            .execution_options(populate_existing=True)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        messages = list((await session.scalars(query)).all())
        applied = await feedback.record(
            session,
            workspace_id=campaign.workspace_id,
            outcomes=[feedback.Outcome(m, "refused", reason=reason) for m in messages],
            now=now,
        )
        await session.flush()
        for message in messages:
            session.expunge(message)
        refused += len(applied)
        if len(messages) < CHUNK or not applied:
            return refused
