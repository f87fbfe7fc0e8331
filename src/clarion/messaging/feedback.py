"""What happened to messages, recorded once: each status change is a `message_events` row
and, where a customer-facing fact changed, an event into the ingestion stream named after
Segment's email spec where it has one (`Email Delivered`, `Email Bounced`, `Email Marked as
Spam`), so segments and journeys can use it like any other event.

Refusals and deferrals are recorded on the message (status and reason) and in its history,
but emit no event: nothing reached the customer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.ingest.internal import InternalEvent, OwnEvents, append_events, emit_events
from clarion.messaging.models import Message, MessageEvent
from clarion.profiles import queries as profiles

# The event each (channel, status) emits into ingestion; a pair not listed emits none.
EVENT_NAMES: dict[tuple[str, str], str] = {
    ("email", "delivered"): "Email Delivered",
    ("email", "bounced"): "Email Bounced",
    ("email", "complained"): "Email Marked as Spam",
    ("email", "failed"): "Email Failed",
    ("sms", "sent"): "SMS Sent",
    ("sms", "delivered"): "SMS Delivered",
    ("sms", "bounced"): "SMS Failed",
    ("sms", "failed"): "SMS Failed",
    ("push", "sent"): "Push Notification Sent",
    ("push", "bounced"): "Push Notification Failed",
    ("push", "failed"): "Push Notification Failed",
    ("inbox", "delivered"): "In-App Message Delivered",
    ("webhook", "delivered"): "Webhook Delivered",
    ("webhook", "failed"): "Webhook Failed",
    ("webhook", "bounced"): "Webhook Failed",
}
# The order statuses move in: a late or repeated report never moves a message backwards.
RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "opened": 4,
    "clicked": 5,
    "converted": 6,
}
FINAL = frozenset({"refused", "failed", "bounced", "complained", "unsubscribed"})
_FAILED_AT_ONCE = 1_000  # messages loaded per round by `fail_through_deleted`


@dataclass
class Outcome:
    """One message's new status and what to record about it."""

    message: Message
    status: str
    reason: str | None = None
    provider_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def moves_forward(current: str, new: str) -> bool:
    """Whether a message in `current` status may move to `new`."""
    if current in FINAL:
        return False
    if new in FINAL:
        return True
    return RANK.get(new, -1) > RANK.get(current, -1)


def properties_of(message: Message) -> dict[str, Any]:
    """What every event about a message carries."""
    return {
        "message_id": str(message.id),
        "channel": message.channel,
        "template_id": message.template_id,
        "template_version_id": message.template_version_id,
        "origin": message.origin,
        "origin_id": message.origin_id,
    }


async def record(
    session: AsyncSession,
    *,
    workspace_id: int,
    outcomes: Sequence[Outcome],
    now: datetime,
    own_events: OwnEvents | None = None,
) -> list[Outcome]:
    """Apply each outcome that moves its message forward (status, reason, times; sent or
    delivered clears an earlier attempt's reason), write its history row and emit its
    ingestion event; the outcomes applied. Flushes only. With `own_events`, the events are
    stored without processing jobs and added to it, for the caller to apply in its
    transaction."""
    applied = [o for o in outcomes if moves_forward(o.message.status, o.status)]
    if not applied:
        return []
    for outcome in applied:
        message = outcome.message
        message.status = outcome.status
        message.updated_at = now
        if outcome.reason is not None:
            message.reason = outcome.reason
        elif outcome.status in ("sent", "delivered"):
            message.reason = None  # an earlier attempt's error no longer holds
        if outcome.provider_id is not None:
            message.provider_id = outcome.provider_id
        if outcome.status in ("sent", "delivered") and message.sent_at is None:
            message.sent_at = now
        if outcome.status == "delivered" and message.delivered_at is None:
            message.delivered_at = now
    await session.execute(
        insert(MessageEvent),
        [
            {
                "workspace_id": workspace_id,
                "message_id": o.message.id,
                "kind": o.status,
                "machine": False,
                "detail": {"reason": o.reason, **o.detail} if o.reason else dict(o.detail),
                "at": now,
            }
            for o in applied
        ],
    )
    await _emit(session, workspace_id, [o for o in applied if _event_name(o)], now, own_events)
    return applied


def _event_name(outcome: Outcome) -> str | None:
    return EVENT_NAMES.get((outcome.message.channel, outcome.status))


async def _emit(
    session: AsyncSession,
    workspace_id: int,
    outcomes: Sequence[Outcome],
    now: datetime,
    own_events: OwnEvents | None,
) -> None:
    if not outcomes:
        return
    # A profile merged since its message was sent speaks as the profile it is now.
    canonical = await profiles.canonical_ids(
        session,
        workspace_id=workspace_id,
        profile_ids=sorted({o.message.profile_id for o in outcomes}),
    )
    senders = await profiles.sender_ids(
        session, workspace_id=workspace_id, profile_ids=sorted(set(canonical.values()))
    )
    events = []
    about: dict[str, uuid.UUID] = {}  # messageId -> canonical profile
    for outcome in outcomes:
        name = _event_name(outcome)
        assert name is not None
        now_as = canonical.get(outcome.message.profile_id, outcome.message.profile_id)
        user_id, anonymous_id = senders.get(now_as, (None, None))
        properties = properties_of(outcome.message)
        if outcome.reason:
            properties["reason"] = outcome.reason
        message_id = f"clarion:message:{outcome.message.id}:{outcome.status}"
        about[message_id] = now_as
        events.append(
            InternalEvent(
                workspace_id=workspace_id,
                # One event per message and status, whoever reports it and however often.
                message_id=message_id,
                name=name,
                user_id=user_id,
                anonymous_id=None if user_id else anonymous_id,
                timestamp=now,
                properties=properties,
            )
        )
    if own_events is None:
        await emit_events(session, events, now=now)
        return
    for stored in await append_events(session, events, now=now):
        own_events.setdefault(about[stored.message_id], []).append(stored)


def message_key(workspace_id: int, idempotency_key: str) -> uuid.UUID:
    """The id of the message with this idempotency key: the same key, the same id, so
    whoever asks again learns the id without reading it back."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"clarion:message:{workspace_id}:{idempotency_key}")


async def mark_unsubscribed(
    session: AsyncSession, *, workspace_id: int, message_id: uuid.UUID, now: datetime
) -> bool:
    """Record that the customer unsubscribed from this message's link (its final status);
    whether it moved. The `Unsubscribed` event itself is consent's."""
    message = await session.get(Message, message_id)
    if message is None or message.workspace_id != workspace_id:
        return False
    applied = await record(
        session,
        workspace_id=workspace_id,
        outcomes=[Outcome(message, "unsubscribed", reason="unsubscribe link")],
        now=now,
    )
    return bool(applied)


CHANNEL_DELETED = "channel_deleted"  # history: the channel a message was sending through went


def deleted_reason(channel_id: int) -> str:
    """Why a message whose channel was deleted fails."""
    return f"channel {channel_id} was deleted"


async def fail_through_deleted(
    session: AsyncSession, *, workspace_id: int, channel_id: int, now: datetime
) -> None:
    """Before channel `channel_id` is deleted: fail the messages still queued to go
    through it ("channel 3 was deleted"), recorded as delivery records a failure (history,
    `Email Failed`...), and mark those `sending` through it with a `channel_deleted`
    history row. Their batch finishes them with the adapter it holds; but should one be
    retried (a temporary failure, a crash), its row names no channel any more (the foreign
    key sets it to null, which reads as "the kind's default"), and delivery fails it by that
    row (`deleted_channels`) instead of sending it through a channel nobody chose. Flushes
    only."""
    reason = deleted_reason(channel_id)
    query = (
        select(Message)
        .where(
            Message.workspace_id == workspace_id,
            Message.channel_id == channel_id,
            # One statement for both: a message a batch moves between them meanwhile
            # (marked sending, or queued again to retry) is still found, as it is now.
            Message.status.in_(("queued", "sending")),
        )
        .order_by(Message.id)
        .limit(_FAILED_AT_ONCE)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # against a delivery batch moving them meanwhile
    after: uuid.UUID | None = None
    while messages := (
        await session.scalars(query if after is None else query.where(Message.id > after))
    ).all():
        after = messages[-1].id
        outcomes = [Outcome(m, "failed", reason=reason) for m in messages if m.status == "queued"]
        await record(session, workspace_id=workspace_id, outcomes=outcomes, now=now)
        session.add_all(
            MessageEvent(
                workspace_id=workspace_id,
                message_id=message.id,
                kind=CHANNEL_DELETED,
                machine=False,
                detail={"channel_id": channel_id, "reason": reason, "attempt": message.attempts},
                at=now,
            )
            for message in messages
            if message.status == "sending"
        )
        await session.flush()


async def deleted_channels(
    session: AsyncSession, *, workspace_id: int, messages: Sequence[Message]
) -> dict[uuid.UUID, int]:
    """The channel deleted while it was sending each of `messages` that names no channel
    now (see `fail_through_deleted`), by message id; the others are not in it."""
    # Only a message that was sent once (`attempts`) can have been sending: the first
    # attempt of everything else costs no query.
    ids = [m.id for m in messages if m.channel_id is None and m.attempts > 0]
    if not ids:
        return {}
    rows = await session.execute(
        select(MessageEvent.message_id, MessageEvent.detail).where(
            MessageEvent.message_id.in_(ids),
            MessageEvent.workspace_id == workspace_id,
            MessageEvent.kind == CHANNEL_DELETED,
        )
    )
    return {message_id: int(detail["channel_id"]) for message_id, detail in rows}
