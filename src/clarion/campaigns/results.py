"""What a campaign did: its recipients, its messages' outcomes, opens and clicks by people
and by machines, conversions with their revenue, and sends, opens and clicks per hour.

Messages are the campaign's by `origin` / `origin_id`; a message's timestamps count it once
however far its status moved (a clicked message was sent, delivered and opened). A click
counts as an open (its images were off), in the totals and per hour alike: people's opens
and clicks are the messages messaging marked `opened_at` (a person's first open, click or
inbox read) and `clicked_at`, the same timestamps the hours are counted by; machines'
are the messages with an `opened` or `clicked` event (opens) and a `clicked` event
(clicks) judged `machine`. A message opened by a privacy proxy and then by its reader
counts in both. A conversion is a recipient whose
profile (its whole merge tree) performed the goal event within the goal's days after their
message was sent; revenue sums those events' `revenue` (else `total`) in minor units per
currency, as profiles' computed traits read money. Events are read from the timeline the
way segments read it: the timeline index by profile and time, then events by key.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.dispatch import ORIGIN
from clarion.campaigns.models import Campaign, CampaignRecipient
from clarion.campaigns.schemas import ByWho, CampaignResults, HourRead
from clarion.ingest.models import Event
from clarion.messaging.models import Message, MessageEvent
from clarion.profiles import computed
from clarion.profiles import queries as profiles
from clarion.profiles.models import ProfileEvent

PROFILES_PER_QUERY = 500


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


async def campaign_results(session: AsyncSession, *, campaign: Campaign) -> CampaignResults:
    """The campaign's results now (see the module docstring)."""
    states = dict(
        (
            await session.execute(
                select(CampaignRecipient.state, func.count())
                .where(CampaignRecipient.campaign_id == campaign.id)
                .group_by(CampaignRecipient.state)
            )
        ).all()
    )
    ours = (
        Message.workspace_id == campaign.workspace_id,
        Message.origin == ORIGIN,
        Message.origin_id == str(campaign.id),
    )
    rows = (
        await session.execute(
            select(
                Message.profile_id,
                Message.status,
                Message.reason,
                Message.sent_at,
                Message.delivered_at,
                Message.opened_at,
                Message.clicked_at,
            ).where(*ours)
        )
    ).all()
    statuses: Counter[str] = Counter(row.status for row in rows)
    refusals: Counter[str] = Counter(
        row.reason or "unknown" for row in rows if row.status == "refused"
    )
    hourly: dict[datetime, list[int]] = {}
    for row in rows:
        for index, moment in enumerate((row.sent_at, row.opened_at, row.clicked_at)):
            if moment is not None:
                hourly.setdefault(_hour(moment), [0, 0, 0])[index] += 1
    seen = await _interactions(session, ours)
    sent = [(row.profile_id, row.sent_at) for row in rows if row.sent_at is not None]
    reached = await conversions(session, campaign, sent)
    converted = None if reached is None else len(reached.first)
    revenue = {} if reached is None else reached.revenue
    return CampaignResults(
        audience=sum(states.values()),
        pending=states.get("pending", 0),
        queued=states.get("queued", 0),
        skipped=states.get("skipped", 0),
        waiting=statuses["queued"] + statuses["sending"],
        sent=len(sent),
        delivered=sum(1 for row in rows if row.delivered_at is not None),
        bounced=statuses["bounced"],
        complained=statuses["complained"],
        failed=statuses["failed"],
        refused=statuses["refused"],
        refusals=dict(refusals),
        opened=ByWho(
            human=sum(1 for row in rows if row.opened_at is not None), machine=seen.machine_opened
        ),
        clicked=ByWho(
            human=sum(1 for row in rows if row.clicked_at is not None), machine=seen.machine_clicked
        ),
        unsubscribed=max(statuses["unsubscribed"], seen.unsubscribed),
        converted=converted,
        revenue=revenue,
        hourly=[
            HourRead(hour=hour, sent=counts[0], opened=counts[1], clicked=counts[2])
            for hour, counts in sorted(hourly.items())
        ],
    )


@dataclass(frozen=True, slots=True)
class Interactions:
    """What the campaign's message events tell, in messages: opened (or clicked) and
    clicked by machines, and unsubscribed from by people."""

    machine_opened: int
    machine_clicked: int
    unsubscribed: int


async def _interactions(session: AsyncSession, ours: Sequence[Any]) -> Interactions:
    """The campaign's messages opened (a click is an open) and clicked by machines, and
    unsubscribed from by people, each counted once."""
    rows = await session.execute(
        select(MessageEvent.message_id, MessageEvent.kind, MessageEvent.machine)
        .distinct()
        .join(Message, Message.id == MessageEvent.message_id)
        .where(*ours, MessageEvent.kind.in_(("opened", "clicked", "unsubscribed")))
    )
    opened: set[uuid.UUID] = set()
    clicked: set[uuid.UUID] = set()
    unsubscribed: set[uuid.UUID] = set()
    for message_id, kind, machine in rows:
        if kind == "unsubscribed":
            if not machine:
                unsubscribed.add(message_id)
        elif machine:
            opened.add(message_id)
            if kind == "clicked":
                clicked.add(message_id)
    return Interactions(len(opened), len(clicked), len(unsubscribed))


@dataclass(frozen=True, slots=True)
class Conversions:
    """Who reached a campaign's goal in its window: each recipient's first goal event
    after their message, and the revenue of all their goal events in the window."""

    first: dict[uuid.UUID, datetime]
    revenue: dict[str, int]


async def conversions(
    session: AsyncSession, campaign: Campaign, sent: Sequence[tuple[uuid.UUID, datetime]]
) -> Conversions | None:
    """The conversions of these (recipient, sent at) pairs; None when the campaign has no
    goal. Revenue sums the goal events' `revenue` (else `total`) per currency, in minor
    units."""
    if campaign.goal_event is None or campaign.goal_days is None:
        return None
    window = timedelta(days=campaign.goal_days)
    first: dict[uuid.UUID, datetime] = {}
    revenue: Counter[str] = Counter()
    for start in range(0, len(sent), PROFILES_PER_QUERY):
        chunk = sent[start : start + PROFILES_PER_QUERY]
        views = await profiles.views_by_id(
            session, workspace_id=campaign.workspace_id, profile_ids=[p for p, _ in chunk]
        )
        owner: dict[uuid.UUID, uuid.UUID] = {}  # timeline row -> recipient
        for profile_id, _ in chunk:
            view = views.get(profile_id)
            if view is not None:
                for row_id in (view.profile.id, *view.merged_ids):
                    owner.setdefault(row_id, profile_id)
        if not owner:
            continue
        earliest = min(at for _, at in chunk)
        latest = max(at for _, at in chunk) + window
        events = await session.execute(
            select(ProfileEvent.profile_id, ProfileEvent.timestamp, Event.properties)
            .join(Event, Event.id == ProfileEvent.event_id)
            .where(
                ProfileEvent.profile_id.in_(list(owner)),
                ProfileEvent.timestamp >= earliest,
                ProfileEvent.timestamp < latest,
                Event.workspace_id == campaign.workspace_id,
                Event.type == "track",
                Event.name == campaign.goal_event,
            )
        )
        sent_at = dict(chunk)
        for row_id, timestamp, properties in events:
            recipient = owner[row_id]
            if not sent_at[recipient] <= timestamp < sent_at[recipient] + window:
                continue
            if recipient not in first or timestamp < first[recipient]:
                first[recipient] = timestamp
            currency, amount = _money(properties or {})
            if amount is not None:
                revenue[currency] += amount
    return Conversions(first, dict(revenue))


def _money(properties: dict[str, Any]) -> tuple[str, int | None]:
    """An event's currency and its `revenue` (else `total`) in that currency's minor units."""
    currency = computed.order_currency(properties)
    amount = properties.get("revenue")
    if amount is None:
        amount = properties.get("total")
    return currency, computed.minor_units(amount, currency)
