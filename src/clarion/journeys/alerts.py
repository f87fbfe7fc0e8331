"""Journey alerts: what a person must look at, raised by a recurring check of every live
journey (`journeys.alerts`, every five minutes, scheduled when a journey is published).

- **failure_rate**: of the runs that ended within the last `window_minutes`, at least
  `failure_percent` failed (once `min_runs` ended);
- **stuck_node**: runs held at a node `stuck_minutes` past when they should have moved
  on (active and not moved, or waiting past their `wake_at`): a step that never ran.

An alert is opened once per journey, kind and node while its condition holds (refreshed
with the latest figures at each check) and resolved when the condition no longer holds.
Opening and resolving are posted to the journey's alert webhook channel when it names one
(`alerts.channel_id`), signed as every webhook is, by a `journeys.alert_notify` job:
retried with backoff when the receiver fails, with the same `webhook-id` on every attempt,
so the receiver can drop a repeat.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import JobContext, PermanentFailure
from clarion.journeys.graph import AlertRules
from clarion.journeys.models import Journey, JourneyAlert, JourneyRun
from clarion.journeys.steps import Plans
from clarion.messaging.channel_config import ChannelPool
from clarion.messaging.channels.base import Outgoing
from clarion.messaging.channels.base import PermanentFailure as Refused
from clarion.messaging.models import MessagingChannel

log = logging.getLogger(__name__)

CHECK = "journeys.alerts"  # job kind: check the workspace's live journeys
CHECK_NAME = "journeys.alerts"  # its recurring schedule's name
CHECK_CRON = "*/5 * * * *"
NOTIFY = "journeys.alert_notify"  # job kind: post an alert to its webhook
NOTIFY_PRIORITY = 5
ENDED = ("completed", "exited", "failed")


class Alerts:
    """Checks journeys and posts their alerts (one per worker process)."""

    def __init__(self, plans: Plans, channels: ChannelPool) -> None:
        self.plans = plans
        self.channels = channels

    async def check(self, context: JobContext) -> None:
        """The `journeys.alerts` job: open, refresh and resolve the workspace's alerts."""
        workspace_id = context.job.workspace_id
        async with context.database.write_session() as session:
            await context.complete(session)
            now = context.clock.now()
            journeys = (
                await session.scalars(
                    select(Journey).where(
                        Journey.workspace_id == workspace_id,
                        Journey.state == "live",
                        Journey.live_version.is_not(None),
                    )
                )
            ).all()
            notices: list[NewJob] = []
            for journey in journeys:
                assert journey.live_version is not None
                plan = await self.plans.get(session, journey.id, journey.live_version)
                rules = plan.graph.alerts
                found = {
                    ("failure_rate", ""): await _failure_rate(session, journey, rules, now),
                    **await _stuck(session, journey, rules, now),
                }
                notices += await _record(session, journey, rules, found, now)
            await enqueue(session, notices, now=now)
            await session.commit()

    async def notify(self, context: JobContext) -> None:
        """The `journeys.alert_notify` job: post the alert's opening or resolution to the
        journey's alert webhook channel."""
        try:
            alert_id = int(context.job.payload["alert_id"])
            what = str(context.job.payload["event"])
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no alert: {context.job.payload}") from error
        workspace_id = context.job.workspace_id
        async with context.database.read_session() as session:
            alert = await session.scalar(
                select(JourneyAlert).where(
                    JourneyAlert.id == alert_id, JourneyAlert.workspace_id == workspace_id
                )
            )
            journey = await session.get(Journey, alert.journey_id) if alert else None
            if alert is None or journey is None or journey.live_version is None:
                return  # deleted meanwhile: nothing to tell
            plan = await self.plans.get(session, journey.id, journey.live_version)
            channel_id = plan.graph.alerts.channel_id
            row = (
                await session.scalar(
                    select(MessagingChannel).where(
                        MessagingChannel.id == channel_id,
                        MessagingChannel.workspace_id == workspace_id,
                    )
                )
                if channel_id is not None
                else None
            )
        if row is None or row.kind != "webhook" or not row.settings.get("url"):
            log.warning(
                "alert %s of journey %s: no webhook channel to post to", alert_id, journey.id
            )
            return
        key = f"journey-alert:{alert.id}:{what}"
        adapter = await self.channels.get(row)
        try:
            await adapter.send(
                Outgoing(
                    message_id=key,
                    idempotency_key=key,
                    to=str(row.settings["url"]),
                    data={"type": f"journey.alert.{what}", "alert": alert_document(alert, journey)},
                )
            )
        except Refused as error:  # the receiver refuses it for good: say so, do not retry
            log.warning("alert %s: the webhook refused it: %s", alert_id, error)
        # TemporaryFailure raises on: the job is retried with backoff, under the same key.


def alert_document(alert: JourneyAlert, journey: Journey) -> dict[str, Any]:
    """An alert as the API and the webhook show it."""
    return {
        "id": alert.id,
        "journey_id": alert.journey_id,
        "journey_name": journey.name,
        "kind": alert.kind,
        "node": alert.node or None,
        "state": alert.state,
        "detail": alert.detail,
        "opened_at": alert.opened_at.isoformat(),
        "updated_at": alert.updated_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


async def _failure_rate(
    session: AsyncSession, journey: Journey, rules: AlertRules, now: datetime
) -> dict[str, Any] | None:
    """The failure figures when they call for an alert, else None."""
    since = now - timedelta(minutes=rules.window_minutes)
    rows = await session.execute(
        select(JourneyRun.state, func.count())
        .where(
            JourneyRun.journey_id == journey.id,
            JourneyRun.state.in_(ENDED),
            JourneyRun.finished_at >= since,
        )
        .group_by(JourneyRun.state)
    )
    counts = {str(state): int(count) for state, count in rows}
    ended = sum(counts.values())
    failed = counts.get("failed", 0)
    if ended < rules.min_runs or failed * 100 < rules.failure_percent * ended:
        return None
    return {
        "failed": failed,
        "ended": ended,
        "failure_percent": round(failed * 100 / ended, 1),
        "threshold_percent": rules.failure_percent,
        "window_minutes": rules.window_minutes,
    }


async def _stuck(
    session: AsyncSession, journey: Journey, rules: AlertRules, now: datetime
) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The nodes holding runs overdue by `stuck_minutes`, with how many and since when."""
    overdue = now - timedelta(minutes=rules.stuck_minutes)
    rows = await session.execute(
        select(
            JourneyRun.node,
            func.count(),
            func.min(func.coalesce(JourneyRun.wake_at, JourneyRun.updated_at)),
        )
        .where(
            JourneyRun.journey_id == journey.id,
            or_(
                and_(JourneyRun.state == "active", JourneyRun.updated_at < overdue),
                and_(JourneyRun.state == "waiting", JourneyRun.wake_at < overdue),
            ),
        )
        .group_by(JourneyRun.node)
    )
    return {
        ("stuck_node", node): {
            "runs": count,
            "due_since": due.isoformat() if isinstance(due, datetime) else str(due),
            "stuck_minutes": rules.stuck_minutes,
        }
        for node, count, due in rows
    }


async def _record(
    session: AsyncSession,
    journey: Journey,
    rules: AlertRules,
    found: dict[tuple[str, str], dict[str, Any] | None],
    now: datetime,
) -> list[NewJob]:
    """Open the alerts found, refresh the open ones still found, resolve the rest; the
    notifications to send."""
    open_alerts = {
        (alert.kind, alert.node): alert
        for alert in await session.scalars(
            select(JourneyAlert).where(
                JourneyAlert.journey_id == journey.id, JourneyAlert.state == "open"
            )
        )
    }
    changed: list[tuple[JourneyAlert, str]] = []
    for key, detail in found.items():
        alert = open_alerts.get(key)
        if detail is None:
            continue
        if alert is None:
            alert = JourneyAlert(
                workspace_id=journey.workspace_id, journey_id=journey.id, kind=key[0],
                node=key[1], state="open", detail=detail, opened_at=now, updated_at=now,
            )  # fmt: skip
            session.add(alert)
            changed.append((alert, "opened"))
        else:
            alert.detail, alert.updated_at = detail, now
    for key, alert in open_alerts.items():
        if found.get(key) is None:
            alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
            changed.append((alert, "resolved"))
    await session.flush()
    for alert, what in changed:
        log.warning("journey %s (%s): alert %s %s %s", journey.id, journey.name, alert.kind,
                    alert.node or "", what)  # fmt: skip
    if rules.channel_id is None:
        return []
    return [
        NewJob(
            workspace_id=journey.workspace_id,
            kind=NOTIFY,
            payload={"alert_id": alert.id, "event": what},
            priority=NOTIFY_PRIORITY,
            dedupe_key=f"{alert.id}:{what}",
        )
        for alert, what in changed
    ]


async def list_alerts(
    session: AsyncSession,
    *,
    workspace_id: int,
    journey_id: int | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[tuple[JourneyAlert, Journey]]:
    """The workspace's alerts (of one journey, in one state when given), newest first."""
    query = (
        select(JourneyAlert, Journey)
        .join(Journey, Journey.id == JourneyAlert.journey_id)
        .where(JourneyAlert.workspace_id == workspace_id)
        .order_by(JourneyAlert.id.desc())
        .limit(limit)
    )
    if journey_id is not None:
        query = query.where(JourneyAlert.journey_id == journey_id)
    if state is not None:
        query = query.where(JourneyAlert.state == state)
    return [(alert, journey) for alert, journey in await session.execute(query)]
