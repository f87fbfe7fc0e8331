"""Moving campaigns through their states: sending (now, at a time, in local time), pausing,
resuming and cancelling; the states and which actions each allows are in `service.py`.

Sending checks, in the caller's transaction, everything that would keep the campaign from
going (template archived, segment deleted, audience empty, no channel of the template's
kind, a time passed, too close or too far ahead) and enqueues its launch job; the jobs are
`dispatch.py`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns import audience as audiences
from clarion.campaigns import channels, conversions, dispatch, service, timing
from clarion.campaigns.models import Campaign
from clarion.campaigns.schemas import SendRequest
from clarion.core.errors import Conflict, FieldError
from clarion.messaging import policy
from clarion.messaging.schemas import UnprocessableInput

_TOO_FAR = f"is more than {timing.MAX_AHEAD.days} days ahead"
# The fields each kind of send uses: any other one given is refused, not ignored.
_USES = {"now": (), "at": ("at",), "local": ("local_date", "local_time")}


def _refuse_unused(request: SendRequest) -> None:
    """UnprocessableInput naming each time field given that `when` does not use (an `at`
    with `when: now` is a send meant for later, not one to go now)."""
    unused = [
        name
        for name in ("at", "local_date", "local_time")
        if getattr(request, name) is not None and name not in _USES[request.when]
    ]
    if unused:
        raise UnprocessableInput(
            f"A send with when {request.when!r} takes no {', '.join(unused)}.",
            errors=[
                FieldError(name, f"is not used when sending {request.when}") for name in unused
            ],
        )


def _schedule(
    request: SendRequest, now: datetime
) -> tuple[datetime | None, date | None, time | None]:
    """(instant in UTC, local date, local time) of a send request; 422 naming the field at
    fault (missing, passed, more than `timing.MAX_AHEAD` ahead, or not used by `when`), 409
    naming `local_date` for a local send less than 24 h ahead."""
    _refuse_unused(request)
    if request.when == "now":
        return None, None, None
    if request.when == "at":
        if request.at is None:
            raise UnprocessableInput(
                "Say when to send.", errors=[FieldError("at", "is required to send at a time")]
            )
        if request.at <= now:
            raise UnprocessableInput(
                "The send time has passed.", errors=[FieldError("at", "is not in the future")]
            )
        if timing.too_far_ahead(request.at, now=now):
            raise UnprocessableInput(
                f"A campaign is scheduled at most {timing.MAX_AHEAD.days} days ahead.",
                errors=[FieldError("at", _TOO_FAR)],
            )
        return request.at.astimezone(UTC), None, None
    errors = []
    if request.local_date is None:
        errors.append(FieldError("local_date", "is required to send in local time"))
    if request.local_time is None:
        errors.append(FieldError("local_time", "is required to send in local time"))
    if errors:
        raise UnprocessableInput("Say which day and time to send.", errors=errors)
    assert request.local_date is not None and request.local_time is not None
    try:
        at = policy.parse_clock(request.local_time)
    except ValueError as error:
        raise UnprocessableInput(
            "The local time is not HH:MM.", errors=[FieldError("local_time", str(error))]
        ) from error
    if timing.passed_everywhere(request.local_date, at, now=now):
        raise UnprocessableInput(
            "The local send time has passed in every time zone.",
            errors=[FieldError("local_date", "has passed")],
        )
    if timing.too_far_ahead(timing.wall_time(request.local_date, at), now=now):
        raise UnprocessableInput(
            f"A campaign is scheduled at most {timing.MAX_AHEAD.days} days ahead.",
            errors=[FieldError("local_date", _TOO_FAR)],
        )
    deadline = timing.local_deadline(request.local_date, at)
    if now > deadline:
        raise Conflict(
            "A send in local time must be scheduled at least 24 hours before it, in UTC"
            f" (by {deadline.isoformat()}).",
            errors=[FieldError("local_date", "is less than 24 hours ahead")],
        )
    return None, request.local_date, at


async def send_campaign(
    session: AsyncSession,
    *,
    workspace_id: int,
    campaign_id: int,
    request: SendRequest,
    now: datetime,
) -> Campaign:
    """Send the draft (or scheduled) campaign now, or schedule it: 409 naming `state`,
    `template_id` (archived), `audience.segment_id` (deleted), `audience` (empty) or
    `channel_id` (none of the kind) when it cannot go, 422 / 409 naming a bad time or a
    time field `when` does not use. A new schedule replaces the previous one. Flushes
    only."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True
    )
    service.require_state(campaign, "send")
    instant, local_date, local_time = _schedule(request, now)
    await service.hold_references(
        session,
        workspace_id=workspace_id,
        audience=campaign.audience,
        template_id=campaign.template_id,
        channel_id=campaign.channel_id,
    )
    template = await service.usable_template(session, workspace_id, campaign.template_id)
    await audiences.require_sendable(session, workspace_id=workspace_id, audience=campaign.audience)
    await channels.require_sending_channel(
        session, workspace_id=workspace_id, channel_id=campaign.channel_id, kind=template.channel
    )
    campaign.channel, campaign.category = template.channel, template.category
    campaign.topic_id = template.topic_id
    campaign.send_mode = request.when
    campaign.schedule_version += 1
    campaign.local_date = local_date.isoformat() if local_date else None
    campaign.local_time = request.local_time if local_time else None
    if request.when == "now":
        campaign.state, campaign.send_at, campaign.launch_at = "sending", now, now
    elif request.when == "at":
        campaign.state, campaign.send_at, campaign.launch_at = "scheduled", instant, instant
    else:
        assert local_date is not None and local_time is not None
        campaign.state, campaign.send_at = "scheduled", None
        campaign.launch_at = timing.local_launch_at(local_date, local_time)
    campaign.updated_at = now
    await session.flush()
    await dispatch.schedule_launch(session, campaign=campaign, now=now)
    if campaign.goal_event is not None:
        await conversions.schedule_conversions(session, workspace_id=workspace_id, now=now)
    return campaign


async def pause_campaign(
    session: AsyncSession, *, workspace_id: int, campaign_id: int, now: datetime
) -> Campaign:
    """Stop asking for the sending campaign's messages (those already asked for go at their
    time, quiet hours or retries; it is `sent` only once resumed); 409 naming `state`
    unless it is sending. Flushes only."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True
    )
    service.require_state(campaign, "pause")
    campaign.state, campaign.paused_at, campaign.updated_at = "paused", now, now
    await session.flush()
    return campaign


async def resume_campaign(
    session: AsyncSession, *, workspace_id: int, campaign_id: int, now: datetime
) -> Campaign:
    """Go on with the paused campaign's pending recipients, each as much later as the
    pause lasted; 409 naming `state` unless it is paused. Flushes only."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True
    )
    service.require_state(campaign, "resume")
    if campaign.paused_at is not None:
        campaign.shift_seconds += max(0.0, (now - campaign.paused_at).total_seconds())
    campaign.state, campaign.paused_at, campaign.updated_at = "sending", None, now
    await session.flush()
    await dispatch.schedule_dispatch(session, campaign=campaign, run_at=now, now=now)
    return campaign


async def cancel_campaign(
    session: AsyncSession, *, workspace_id: int, campaign_id: int, now: datetime
) -> Campaign:
    """Cancel the campaign: its pending recipients are skipped and its messages still
    queued are refused ("campaign cancelled"); 409 naming `state` when it is a draft, sent
    or cancelled. Flushes only."""
    campaign = await service.get_campaign_or_raise(
        session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True
    )
    service.require_state(campaign, "cancel")
    campaign.state, campaign.finished_at, campaign.updated_at = "cancelled", now, now
    campaign.paused_at = None
    campaign.schedule_version += 1  # a launch job still waiting finds itself stale
    await dispatch.skip_pending(session, campaign=campaign, reason="campaign cancelled", now=now)
    await dispatch.refuse_queued(session, campaign=campaign, reason="campaign cancelled", now=now)
    await session.flush()
    return campaign
