"""Conversions written onto the messages: a recurring job per workspace marks `converted`
each campaign message whose recipient reached the campaign's goal within its window (with
`converted_at`, the first goal event's time, and a history row), so a message's status and
the lists built on it say what the results say.

Results themselves count conversions from the timeline when read (`results.py`), so they
are exact at any moment; this job makes the messages agree within `CONVERSIONS_CRON`'s
period. It looks at campaigns whose window is still open, give or take a day for events
that arrive late.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.dispatch import ORIGIN
from clarion.campaigns.models import Campaign
from clarion.campaigns.results import conversions
from clarion.core.jobs.recurring import schedule_recurring_job
from clarion.core.jobs.worker import JobContext
from clarion.messaging import feedback
from clarion.messaging.feedback import Outcome
from clarion.messaging.models import Message

CONVERSIONS = "campaigns.conversions"  # job kind: mark a workspace's converted messages
CONVERSIONS_CRON = "*/10 * * * *"
CONVERSIONS_PRIORITY = 20
LATE_EVENTS = timedelta(days=1)  # how long after a window closes its events may still come
_CONVERTIBLE = ("sent", "delivered", "opened", "clicked")


async def schedule_conversions(session: AsyncSession, *, workspace_id: int, now: datetime) -> None:
    """Make sure the workspace's conversions job runs (idempotent)."""
    await schedule_recurring_job(
        session,
        workspace_id=workspace_id,
        name=CONVERSIONS,
        kind=CONVERSIONS,
        cron=CONVERSIONS_CRON,
        priority=CONVERSIONS_PRIORITY,
        now=now,
    )


async def record_conversions(session: AsyncSession, *, workspace_id: int, now: datetime) -> int:
    """Mark `converted` the workspace's campaign messages whose recipients reached the goal
    in its window and are not marked yet; how many were marked. Flushes only."""
    campaigns = (
        await session.scalars(
            select(Campaign).where(
                Campaign.workspace_id == workspace_id,
                Campaign.goal_event.is_not(None),
                Campaign.goal_days.is_not(None),
                Campaign.launched_at.is_not(None),
            )
        )
    ).all()
    marked = 0
    for campaign in campaigns:
        assert campaign.goal_days is not None
        oldest = now - timedelta(days=campaign.goal_days) - LATE_EVENTS
        candidates = (
            await session.scalars(
                select(Message).where(
                    Message.workspace_id == workspace_id,
                    Message.origin == ORIGIN,
                    Message.origin_id == str(campaign.id),
                    Message.sent_at >= oldest,
                    Message.status.in_(_CONVERTIBLE),
                )
            )
        ).all()
        sent = [(m.profile_id, m.sent_at) for m in candidates if m.sent_at is not None]
        reached = await conversions(session, campaign, sent)
        if reached is None or not reached.first:
            continue
        outcomes = [
            Outcome(m, "converted", detail={"at": reached.first[m.profile_id].isoformat()})
            for m in candidates
            if m.profile_id in reached.first
        ]
        for outcome in await feedback.record(
            session, workspace_id=workspace_id, outcomes=outcomes, now=now
        ):
            outcome.message.converted_at = reached.first[outcome.message.profile_id]
            marked += 1
    await session.flush()
    return marked


async def run_conversions(context: JobContext) -> None:
    """The `campaigns.conversions` job: one workspace's conversions, in one transaction."""
    async with context.database.write_session() as session:
        await context.complete(session)
        await record_conversions(
            session, workspace_id=context.job.workspace_id, now=context.clock.now()
        )
        await session.commit()
