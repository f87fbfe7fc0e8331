"""Routes: campaigns (`/api/v1/campaigns`): define, preview the audience, send now or
schedule, pause, resume, cancel; their recipients and results."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from clarion.campaigns import audience as audiences
from clarion.campaigns import lifecycle, results, service
from clarion.campaigns.models import Campaign
from clarion.campaigns.schemas import (
    AudiencePreview,
    CampaignCreate,
    CampaignPage,
    CampaignRead,
    CampaignResults,
    CampaignUpdate,
    PreviewRequest,
    RecipientPage,
    RecipientRead,
    RecipientState,
    SampleProfile,
    SendRequest,
    State,
)
from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession
from clarion.core.routing import StrictJSONRoute
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1", tags=["campaigns"], route_class=StrictJSONRoute)
Cursor = Annotated[str | None, Query(max_length=512)]
Sample = Annotated[int, Query(ge=0, le=100)]


def read(campaign: Campaign) -> CampaignRead:
    """A campaign as the API shows it."""
    return CampaignRead.from_row(campaign)


def _preview(count: int, sample: list[tuple[uuid.UUID, str | None]]) -> AudiencePreview:
    return AudiencePreview(
        count=count,
        sample=[SampleProfile(profile_id=p, user_id=u) for p, u in sample],
    )


@router.get("/campaigns", response_model=CampaignPage)
async def list_campaigns(
    caller: ManagementCaller,
    session: ReadSession,
    state: State | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CampaignPage:
    """The workspace's campaigns, newest first (in one state when given)."""
    items, next_cursor = await service.list_campaigns(
        session, workspace_id=caller.workspace_id, state=state, limit=limit, cursor=cursor
    )
    return CampaignPage(items=[read(item) for item in items], next_cursor=next_cursor)


@router.post("/campaigns", response_model=CampaignRead, status_code=status.HTTP_201_CREATED)
async def create_campaign(
    body: CampaignCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> CampaignRead:
    """A new draft campaign; 422 / 409 naming the template, channel, segment or name at
    fault, and nothing saved."""
    campaign = await service.create_campaign(
        session, workspace_id=caller.workspace_id, body=body, now=clock.now()
    )
    await session.commit()
    return read(campaign)


@router.post("/campaigns/preview", response_model=AudiencePreview)
async def preview_audience(
    body: PreviewRequest, caller: ManagementCaller, session: ReadSession, sample: Sample = 20
) -> AudiencePreview:
    """How many profiles an audience holds now, and some of them, without saving anything."""
    count, chosen = await audiences.preview(
        session,
        workspace_id=caller.workspace_id,
        audience=body.audience.model_dump(mode="json"),
        sample=sample,
    )
    return _preview(count, chosen)


@router.get("/campaigns/{campaign_id}", response_model=CampaignRead)
async def read_campaign(
    campaign_id: RowId, caller: ManagementCaller, session: ReadSession
) -> CampaignRead:
    """One campaign."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id
    )
    return read(campaign)


@router.patch("/campaigns/{campaign_id}", response_model=CampaignRead)
async def update_campaign(
    campaign_id: RowId,
    body: CampaignUpdate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> CampaignRead:
    """Change a draft or scheduled campaign; 409 naming `state` for any other."""
    campaign = await service.update_campaign(
        session,
        workspace_id=caller.workspace_id,
        campaign_id=campaign_id,
        body=body,
        now=clock.now(),
    )
    await session.commit()
    return read(campaign)


@router.delete("/campaigns/{campaign_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_campaign(
    campaign_id: RowId, caller: ManagementCaller, session: WriteSession
) -> Response:
    """Delete a draft campaign; 409 naming `state` for any other (cancel those)."""
    await service.delete_campaign(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/campaigns/{campaign_id}/send", response_model=CampaignRead)
async def send_campaign(
    campaign_id: RowId,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    body: SendRequest | None = None,
) -> CampaignRead:
    """Send now (no body, or `when: now`), at a time, or in each recipient's local time;
    409 naming what keeps it from going (state, template, audience, channel, time)."""
    campaign = await lifecycle.send_campaign(
        session,
        workspace_id=caller.workspace_id,
        campaign_id=campaign_id,
        request=body or SendRequest(),
        now=clock.now(),
    )
    await session.commit()
    return read(campaign)


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignRead)
async def pause_campaign(
    campaign_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> CampaignRead:
    """Stop asking for a sending campaign's messages; 409 naming `state` otherwise."""
    campaign = await lifecycle.pause_campaign(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id, now=clock.now()
    )
    await session.commit()
    return read(campaign)


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignRead)
async def resume_campaign(
    campaign_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> CampaignRead:
    """Go on with a paused campaign; 409 naming `state` otherwise."""
    campaign = await lifecycle.resume_campaign(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id, now=clock.now()
    )
    await session.commit()
    return read(campaign)


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignRead)
async def cancel_campaign(
    campaign_id: RowId, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> CampaignRead:
    """Cancel a scheduled, sending or paused campaign: pending recipients are skipped,
    messages still queued refused; 409 naming `state` otherwise."""
    campaign = await lifecycle.cancel_campaign(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id, now=clock.now()
    )
    await session.commit()
    return read(campaign)


@router.get("/campaigns/{campaign_id}/preview", response_model=AudiencePreview)
async def preview_campaign(
    campaign_id: RowId, caller: ManagementCaller, session: ReadSession, sample: Sample = 20
) -> AudiencePreview:
    """How many profiles the campaign's audience holds now, and some of them."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id
    )
    count, chosen = await audiences.preview(
        session, workspace_id=caller.workspace_id, audience=campaign.audience, sample=sample
    )
    return _preview(count, chosen)


@router.get("/campaigns/{campaign_id}/results", response_model=CampaignResults)
async def campaign_results(
    campaign_id: RowId, caller: ManagementCaller, session: ReadSession
) -> CampaignResults:
    """What the campaign did: recipients, outcomes, opens and clicks (people and machines),
    conversions and revenue, per hour."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=caller.workspace_id, campaign_id=campaign_id
    )
    return await results.campaign_results(session, campaign=campaign)


@router.get("/campaigns/{campaign_id}/recipients", response_model=RecipientPage)
async def list_recipients(
    campaign_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    state: RecipientState | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RecipientPage:
    """The launched campaign's recipients by profile id (in one state when given)."""
    items, next_cursor = await service.list_recipients(
        session,
        workspace_id=caller.workspace_id,
        campaign_id=campaign_id,
        state=state,
        limit=limit,
        cursor=cursor,
    )
    return RecipientPage(
        items=[RecipientRead.model_validate(item) for item in items], next_cursor=next_cursor
    )
