"""What providers report after a send: Twilio's status callbacks for SMS, and bounce and
complaint mails (RFC 3464 delivery status notifications, RFC 5965 feedback reports) for
email. Each finds its message by the provider's id for it and moves its status forward
once (`feedback.record`); a hard bounce or a complaint puts the address on the suppression
list, and a complaint also opts the profile out of marketing email.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.messaging import feedback
from clarion.messaging.channels.bounces import BounceReport, ComplaintReport, parse_report
from clarion.messaging.channels.sms import parse_status_callback, sms_bounce
from clarion.messaging.consent import service as consent
from clarion.messaging.consent import suppressions
from clarion.messaging.feedback import Outcome
from clarion.messaging.models import Message, MessagingChannel


async def _by_provider_id(
    session: AsyncSession, channel: MessagingChannel, provider_id: str
) -> Message | None:
    if "\x00" in provider_id:  # names none (PostgreSQL keeps no NUL, nor compares one)
        return None
    return await session.scalar(
        select(Message).where(
            Message.workspace_id == channel.workspace_id,
            Message.provider_id == provider_id,
            Message.channel == channel.kind,
        )
    )


async def apply_sms_status(
    session: AsyncSession, *, channel: MessagingChannel, params: Mapping[str, str], now: datetime
) -> str | None:
    """Apply one Twilio status callback (already verified); the message's new status, or
    None when it names no message of the channel or moves nothing. ValueError when the
    parameters are not a status callback."""
    report = parse_status_callback(params)
    message = await _by_provider_id(session, channel, report.message_sid)
    if message is None:
        return None
    match report.status:
        case "delivered":
            outcome = Outcome(message, "delivered")
        case "undelivered" | "failed":
            bounce = sms_bounce(report.error_code) if report.error_code is not None else None
            status = "bounced" if bounce == "hard" else "complained" if bounce else "failed"
            outcome = Outcome(
                message, status, reason=f"twilio {report.status} ({report.error_code})"
            )
            if bounce in ("hard", "complaint") and message.address:
                await _suppress(session, message, bounce, outcome.reason or "", now)
        case _:
            return None
    applied = await feedback.record(
        session, workspace_id=channel.workspace_id, outcomes=[outcome], now=now
    )
    return applied[0].status if applied else None


async def apply_bounce_mail(
    session: AsyncSession, *, channel: MessagingChannel, raw: bytes, now: datetime
) -> str | None:
    """Apply one bounce or complaint mail; the message's new status, or None when the mail
    is neither, names no message of the channel, or moves nothing."""
    report = parse_report(raw)
    if report is None or report.original_message_id is None:
        return None
    message = await _by_provider_id(session, channel, report.original_message_id)
    if message is None:
        return None
    outcome = _bounce_outcome(message, report)
    if outcome is None:
        return None
    applied = await feedback.record(
        session, workspace_id=channel.workspace_id, outcomes=[outcome], now=now
    )
    if applied and outcome.status in ("bounced", "complained") and message.address:
        kind = "complaint" if outcome.status == "complained" else "hard"
        await _suppress(session, message, kind, outcome.reason or "", now)
    return applied[0].status if applied else None


def _bounce_outcome(message: Message, report: BounceReport | ComplaintReport) -> Outcome | None:
    if isinstance(report, ComplaintReport):
        return Outcome(message, "complained", reason=f"complaint ({report.feedback_type})")
    hard = [r for r in report.recipients if r.kind == "hard"]
    if not hard:
        return None  # a delay or a soft failure: the receiving server keeps trying
    failure = hard[0]
    return Outcome(
        message,
        "bounced",
        reason=f"{failure.status or '5.0.0'} {failure.diagnostic_code or ''}".strip(),
    )


async def _suppress(
    session: AsyncSession, message: Message, kind: str, detail: str, now: datetime
) -> None:
    assert message.address is not None
    # An address no list can hold (kept from before sends checked them) is not suppressed:
    # raising would lose the report.
    if suppressions.address_problem(message.channel, message.address) is None:
        await consent.suppress(
            session,
            workspace_id=message.workspace_id,
            channel=message.channel,
            address=message.address,
            reason="complaint" if kind == "complaint" else "hard_bounce",
            detail=detail,
            now=now,
        )
    if kind == "complaint":
        await consent.set_consent(
            session,
            workspace_id=message.workspace_id,
            profile_id=message.profile_id,
            channel=message.channel,
            state="opted_out",
            source="complaint",
            now=now,
        )
