"""Campaigns: defining them (checked against templates, channels and segments), reading
them, and moving them through their states.

    draft ──send──► scheduled ──(launch job)──► sending ──(nobody pending, no message
      │  └─────────────send now─────────────────►  │ ▲       waiting)──► sent
      │                                     pause  │ │ resume
    delete                                         ▼ │
                                                  paused
    scheduled, sending, paused ──cancel──► cancelled

Anything else is a Conflict naming `state`. Only a draft or scheduled campaign can be
edited, only a draft deleted. Sending, pausing, resuming and cancelling are in
`lifecycle.py`; the jobs that do the sending in `dispatch.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns import audience as audiences
from clarion.campaigns import channels, conversions
from clarion.campaigns.models import Campaign, CampaignRecipient
from clarion.campaigns.schemas import CampaignCreate, CampaignUpdate
from clarion.core import errors
from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.pagination import decode_uuid_cursor, encode_cursor, id_page
from clarion.messaging import channel_config
from clarion.messaging import templates as message_templates
from clarion.messaging.models import MessageTemplate
from clarion.messaging.schemas import UnprocessableInput
from clarion.segments import service as segments

# Which states each action may start from.
ALLOWED: dict[str, frozenset[str]] = {
    "edit": frozenset({"draft", "scheduled"}),
    "delete": frozenset({"draft"}),
    "send": frozenset({"draft", "scheduled"}),
    "pause": frozenset({"sending"}),
    "resume": frozenset({"paused"}),
    "cancel": frozenset({"scheduled", "sending", "paused"}),
}


_DONE = {
    "edit": "edited",
    "delete": "deleted",
    "send": "sent",
    "pause": "paused",
    "resume": "resumed",
    "cancel": "cancelled",
}


def require_state(campaign: Campaign, action: str) -> None:
    """Conflict naming `state` unless the campaign's state allows `action`."""
    errors.require_state("campaign", campaign.state, action, ALLOWED, _DONE)


async def usable_template(
    session: AsyncSession, workspace_id: int, template_id: int
) -> MessageTemplate:
    """The template new messages can use; 422 naming `template_id` when the workspace has
    none, 409 when it is archived."""
    try:
        template, _ = await message_templates.current_version(
            session, workspace_id=workspace_id, template_id=template_id
        )
    except NotFound as error:
        raise UnprocessableInput(
            "The campaign names no template of this workspace.",
            errors=[FieldError("template_id", f"no template {template_id} here")],
        ) from error
    except Conflict as error:
        raise Conflict(
            error.detail, errors=[FieldError("template_id", "the template is archived")]
        ) from error
    return template


async def hold_references(
    session: AsyncSession,
    *,
    workspace_id: int,
    audience: dict[str, Any],
    template_id: int,
    channel_id: int | None,
) -> None:
    """Hold (on PostgreSQL, until the transaction ends) what a campaign about to be
    scheduled or sent takes: its audience's segment, its template and its channel (as
    `campaigns_using_*` read them), before they are checked. A delete (archive) of one
    either waits for this transaction and then sees the campaign (409), or goes first and
    the check finds it gone. After the campaign row, always in this order."""
    segment_id = audience.get("segment_id") if audience.get("type") == audiences.SEGMENT else None
    await segments.hold_segments(
        session,
        workspace_id=workspace_id,
        segment_ids=[segment_id] if isinstance(segment_id, int) else [],
    )
    await message_templates.hold_templates(
        session, workspace_id=workspace_id, template_ids=[template_id]
    )
    await channel_config.hold_channels(
        session, workspace_id=workspace_id, channel_ids=[] if channel_id is None else [channel_id]
    )


def _goal(campaign: Campaign, goal: Any) -> None:
    campaign.goal_event = goal.event if goal is not None else None
    campaign.goal_days = goal.within_days if goal is not None else None


async def create_campaign(
    session: AsyncSession, *, workspace_id: int, body: CampaignCreate, now: datetime
) -> Campaign:
    """A new draft campaign; 422 naming the template, channel or segment that is not the
    workspace's, 409 for an archived template or a taken name. Flushes only."""
    template = await usable_template(session, workspace_id, body.template_id)
    await channels.check_channel(session, workspace_id, body.channel_id, template.channel)
    audience = body.audience.model_dump(mode="json")
    await audiences.check(session, workspace_id=workspace_id, audience=audience)
    campaign = Campaign(
        workspace_id=workspace_id,
        name=body.name,
        description=body.description,
        state="draft",
        audience=audience,
        template_id=template.id,
        channel=template.channel,
        category=template.category,
        topic_id=template.topic_id,
        channel_id=body.channel_id,
        priority=body.priority,
        throttle_per_minute=body.throttle_per_minute,
        schedule_version=0,
        snapshot_done=False,
        audience_size=0,
        slots={},
        shift_seconds=0.0,
        created_at=now,
        updated_at=now,
    )
    _goal(campaign, body.goal)
    session.add(campaign)
    await _flush_named(session, body.name)
    return campaign


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A campaign called {name!r} already exists.",
            errors=[FieldError("name", "is taken by another campaign")],
        ) from error


async def get_campaign_or_raise(
    session: AsyncSession, *, workspace_id: int, campaign_id: int, lock: bool = False
) -> Campaign:
    """The workspace's campaign (locked FOR UPDATE on PostgreSQL with `lock`); NotFound
    otherwise."""
    query = select(Campaign).where(
        Campaign.workspace_id == workspace_id, Campaign.id == campaign_id
    )
    if lock:
        query = query.execution_options(populate_existing=True)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
    campaign = await session.scalar(query)
    if campaign is None:
        raise NotFound(f"No campaign {campaign_id} in this workspace.")
    return campaign


async def list_campaigns(
    session: AsyncSession,
    *,
    workspace_id: int,
    state: str | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Campaign], str | None]:
    """The workspace's campaigns (in one state when given), newest first, cursor-paged."""
    query = select(Campaign).where(Campaign.workspace_id == workspace_id)
    if state is not None:
        query = query.where(Campaign.state == state)
    return await id_page(session, query, Campaign.id, limit=limit, cursor=cursor, newest_first=True)


async def update_campaign(
    session: AsyncSession,
    *,
    workspace_id: int,
    campaign_id: int,
    body: CampaignUpdate,
    now: datetime,
) -> Campaign:
    """The draft or scheduled campaign with the given fields changed (409 naming `state`
    otherwise); checked as on creation, and a scheduled one as on sending too (409 naming
    `channel_id` when it would have no channel to send through, `audience` when a list
    given resolves to nobody). A goal on a scheduled campaign makes sure its conversions
    are recorded. Flushes only."""
    campaign = await get_campaign_or_raise(
        session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True
    )
    require_state(campaign, "edit")
    given = body.model_fields_set
    audience = None if body.audience is None else body.audience.model_dump(mode="json")
    if campaign.state == "scheduled":  # a draft holds nothing: nothing to hold for it
        await hold_references(
            session,
            workspace_id=workspace_id,
            audience=campaign.audience if audience is None else audience,
            template_id=body.template_id or campaign.template_id,
            channel_id=body.channel_id if "channel_id" in given else campaign.channel_id,
        )
    # The schema refuses null for what cannot be removed: None is "left out" below.
    if body.template_id is not None:
        template = await usable_template(session, workspace_id, body.template_id)
        campaign.template_id = template.id
        campaign.channel = template.channel
        campaign.category = template.category
        campaign.topic_id = template.topic_id
    if "channel_id" in given:
        campaign.channel_id = body.channel_id
    await channels.check_channel(session, workspace_id, campaign.channel_id, campaign.channel)
    if campaign.state == "scheduled":
        await channels.require_sending_channel(
            session,
            workspace_id=workspace_id,
            channel_id=campaign.channel_id,
            kind=campaign.channel,
        )
    if audience is not None:
        await audiences.check(session, workspace_id=workspace_id, audience=audience)
        if campaign.state == "scheduled" and audience["type"] == audiences.LIST:
            # As sending checks it. A segment is left to its launch: empty now, it may fill.
            await audiences.require_sendable(session, workspace_id=workspace_id, audience=audience)
        campaign.audience = audience
    for field in ("name", "description", "priority"):
        value = getattr(body, field)
        if value is not None:
            setattr(campaign, field, value)
    if "throttle_per_minute" in given:
        campaign.throttle_per_minute = body.throttle_per_minute
    if "goal" in given:
        _goal(campaign, body.goal)
    campaign.updated_at = now
    await _flush_named(session, campaign.name)
    if campaign.state == "scheduled" and campaign.goal_event is not None:
        # Sending schedules the job for a goal set by then; this one may come after.
        await conversions.schedule_conversions(session, workspace_id=workspace_id, now=now)
    return campaign


async def delete_campaign(session: AsyncSession, *, workspace_id: int, campaign_id: int) -> None:
    """Delete a draft campaign; 409 naming `state` for any other."""
    campaign = await get_campaign_or_raise(
        session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True
    )
    require_state(campaign, "delete")
    await session.execute(delete(Campaign).where(Campaign.id == campaign.id))


async def list_recipients(
    session: AsyncSession,
    *,
    workspace_id: int,
    campaign_id: int,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[CampaignRecipient], str | None]:
    """The campaign's recipients (in one state when given) by profile id, cursor-paged."""
    await get_campaign_or_raise(session, workspace_id=workspace_id, campaign_id=campaign_id)
    query = select(CampaignRecipient).where(
        CampaignRecipient.workspace_id == workspace_id,
        CampaignRecipient.campaign_id == campaign_id,
    )
    if state is not None:
        query = query.where(CampaignRecipient.state == state)
    if cursor is not None:
        query = query.where(CampaignRecipient.profile_id > decode_uuid_cursor(cursor))
    query = query.order_by(CampaignRecipient.profile_id).limit(limit + 1)
    items = list((await session.scalars(query)).all())
    more = len(items) > limit
    items = items[:limit]
    return items, encode_cursor(items[-1].profile_id.hex) if more else None


async def campaigns_using_segment(
    session: AsyncSession, workspace_id: int, segment_id: int
) -> list[str]:
    """The campaigns that have yet to take their audience from the segment (scheduled, or
    sending or paused before the snapshot ends), as "campaign N (name)"."""
    rows = await session.execute(
        select(Campaign.id, Campaign.name, Campaign.audience)
        .where(
            Campaign.workspace_id == workspace_id,
            Campaign.state.in_(("scheduled", "sending", "paused")),
            Campaign.snapshot_done.is_(False),
        )
        .order_by(Campaign.id)
    )
    return [
        f"campaign {campaign_id} ({name})"
        for campaign_id, name, audience in rows
        if audience.get("type") == "segment" and audience.get("segment_id") == segment_id
    ]


async def campaigns_using_channel(
    session: AsyncSession, workspace_id: int, channel_id: int
) -> list[str]:
    """The scheduled, sending and paused campaigns that name the channel (`channel_id`), as
    "campaign N (name)". One naming no channel sends through its kind's default, whichever
    that is when it sends: it holds no channel back."""
    rows = await session.execute(
        select(Campaign.id, Campaign.name)
        .where(
            Campaign.workspace_id == workspace_id,
            Campaign.state.in_(("scheduled", "sending", "paused")),
            Campaign.channel_id == channel_id,
        )
        .order_by(Campaign.id)
    )
    return [f"campaign {campaign_id} ({name})" for campaign_id, name in rows]


async def campaigns_using_template(
    session: AsyncSession, workspace_id: int, template_id: int
) -> list[str]:
    """The campaigns that have yet to take their template's version (scheduled, or sending
    or paused before their launch fixes it), as "campaign N (name)". A launched campaign
    sends the version it fixed, archived or not."""
    rows = await session.execute(
        select(Campaign.id, Campaign.name)
        .where(
            Campaign.workspace_id == workspace_id,
            Campaign.state.in_(("scheduled", "sending", "paused")),
            Campaign.template_id == template_id,
            Campaign.launched_at.is_(None),
        )
        .order_by(Campaign.id)
    )
    return [f"campaign {campaign_id} ({name})" for campaign_id, name in rows]
