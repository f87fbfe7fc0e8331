"""Messages as the API sees them: send one (a transactional receipt, a one-off note), list a
workspace's or a profile's messages, read one with its history; and the workspace's sending
rules (quiet hours, frequency caps)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.pagination import decode_time_uuid_cursor, encode_cursor
from clarion.messaging import addresses, channel_config, delivery, templates
from clarion.messaging.consent import service as consent
from clarion.messaging.consent import topics
from clarion.messaging.consent.consents import PENDING
from clarion.messaging.models import FrequencyCap, Message, MessageEvent, MessagingPolicy
from clarion.messaging.schemas import UnprocessableInput
from clarion.profiles import queries as profiles

# The email a double opt-in sends, made on first use as an ordinary (editable) template.
CONFIRMATION_TEMPLATE = "Subscription confirmation"
CONFIRMATION_EVENT = "Subscription Confirmation Requested"
CONFIRMATION_CONTENT = {
    "subject": "Please confirm: {{ event.properties.topic_name }}",
    "html": (
        "<p>Hi {{ profile.traits.first_name | default('there') }},</p>"
        "<p>Please confirm that you want to receive {{ event.properties.topic_name }}.</p>"
        '<p><a href="{{ event.properties.confirmation_url }}" data-clarion-untracked>'
        "Confirm my subscription</a></p>"
        "<p>If you did not ask for this, ignore this email: nothing will be sent.</p>"
    ),
}


@dataclass(frozen=True, slots=True)
class SendRequest:
    """What `send_message` needs: a recipient (profile id or user id), a template, and
    optionally a channel, an idempotency key, a priority, a time and template context."""

    template_id: int
    profile_id: uuid.UUID | None = None
    user_id: str | None = None
    channel_id: int | None = None
    idempotency_key: str | None = None
    priority: int = 0
    send_after: datetime | None = None
    address: str | None = None
    context: dict[str, Any] | None = None


async def get_recipient_id(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID | None = None,
    user_id: str | None = None,
) -> uuid.UUID | None:
    """The id of the workspace's canonical profile `profile_id` is (or was merged into), else
    of the one owning `user_id`; None when neither names one."""
    if profile_id is not None:
        try:
            found = await profiles.get_profile_or_raise(
                session, workspace_id=workspace_id, profile_id=profile_id
            )
        except NotFound:
            pass
        else:
            return found.id
    if user_id is None:
        return None
    owner = await profiles.get_by_identity(
        session, workspace_id=workspace_id, kind="user_id", value=user_id
    )
    return None if owner is None else owner.id


async def _recipient(session: AsyncSession, workspace_id: int, request: SendRequest) -> uuid.UUID:
    """The canonical profile the request names by profile id, or else by user id; 422 naming
    the field it gave when there is none (a missing profile id is not retried as a user id)."""
    by_id = request.profile_id is not None
    found = await get_recipient_id(
        session,
        workspace_id=workspace_id,
        profile_id=request.profile_id,
        user_id=None if by_id else request.user_id,
    )
    if found is not None:
        return found
    if by_id:
        raise _refused("profile_id", "no such profile")
    raise _refused("user_id", "no profile has this user id")


def _refused(field: str, message: str) -> UnprocessableInput:
    """The 422 of a send refused for `field`."""
    return UnprocessableInput(
        f"The message cannot be sent: {message}.", errors=[FieldError(field, message)]
    )


async def _check_channel(
    session: AsyncSession, workspace_id: int, channel_id: int | None, kind: str
) -> None:
    """UnprocessableInput naming `channel_id` unless it is None or one of the workspace's
    channels of `kind`."""
    if channel_id is None:
        return
    problem = await channel_config.unfit_channel(
        session, workspace_id=workspace_id, channel_id=channel_id, kind=kind
    )
    if problem is not None:
        raise _refused("channel_id", problem)


def _address(kind: str, address: str | None) -> str | None:
    """The given address as the channel sends to it; UnprocessableInput naming `address`
    when a channel of `kind` cannot send to it."""
    if address is None:
        return None
    try:
        return addresses.sendable_address(kind, address)
    except ValueError as error:
        raise _refused("address", str(error)) from error


async def send_message(
    session: AsyncSession, *, workspace_id: int, request: SendRequest, now: datetime
) -> Message:
    """Queue one message (delivered by the workers) and return it; the same idempotency key
    returns the message it already made. 422 naming the field for an unknown profile, user,
    template or an archived template, a channel that is not one of the workspace's of the
    template's kind, or an address the template's channel cannot send to; nothing saved."""
    profile_id = await _recipient(session, workspace_id, request)
    try:
        template, version = await templates.current_version(
            session, workspace_id=workspace_id, template_id=request.template_id
        )
    except NotFound as error:
        raise _refused("template_id", "no such template") from error
    except Conflict as error:
        raise _refused("template_id", "the template is archived") from error
    await _check_channel(session, workspace_id, request.channel_id, template.channel)
    address = _address(template.channel, request.address)
    key = request.idempotency_key or f"api:{uuid.uuid4().hex}"
    [message_id] = await delivery.queue_messages(
        session,
        workspace_id=workspace_id,
        requests=[
            delivery.MessageRequest(
                profile_id=profile_id,
                template_id=template.id,
                template_version_id=version.id,
                channel=template.channel,
                idempotency_key=key,
                origin="api",
                channel_id=request.channel_id,
                category=template.category,
                topic_id=template.topic_id,
                priority=request.priority,
                send_after=request.send_after,
                address=address,
                context=request.context or {},
            )
        ],
        now=now,
    )
    found = await session.get(Message, message_id)
    assert found is not None
    return found


async def get_message_or_raise(
    session: AsyncSession, *, workspace_id: int, message_id: uuid.UUID
) -> tuple[Message, list[MessageEvent]]:
    """A message of the workspace with its history, oldest first; NotFound otherwise."""
    message = await session.get(Message, message_id)
    if message is None or message.workspace_id != workspace_id:
        raise NotFound(f"No message {message_id}.")
    events = await session.scalars(
        select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
    )
    return message, list(events.all())


async def list_messages(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID | None = None,
    status: str | None = None,
    origin: str | None = None,
    origin_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Message], str | None]:
    """The workspace's messages, newest first, filtered; the page and the next cursor."""
    query = select(Message).where(Message.workspace_id == workspace_id)
    if profile_id is not None:
        query = query.where(Message.profile_id == profile_id)
    if status is not None:
        query = query.where(Message.status == status)
    if origin is not None:
        query = query.where(Message.origin == origin)
    if origin_id is not None:
        query = query.where(Message.origin_id == origin_id)
    if cursor is not None:
        at, last_id = decode_time_uuid_cursor(cursor)
        query = query.where(
            (Message.created_at < at) | ((Message.created_at == at) & (Message.id < last_id))
        )
    rows = list(
        (
            await session.scalars(
                query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
            )
        ).all()
    )
    page, more = rows[:limit], len(rows) > limit
    following = (
        encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if more and page else None
    )
    return page, following


async def get_policy(session: AsyncSession, *, workspace_id: int) -> MessagingPolicy | None:
    """The workspace's quiet hours, if it set them."""
    return await session.get(MessagingPolicy, workspace_id)


async def set_policy(
    session: AsyncSession,
    *,
    workspace_id: int,
    quiet_hours_start: str | None,
    quiet_hours_end: str | None,
    quiet_channels: Sequence[str],
    default_timezone: str,
    now: datetime,
) -> MessagingPolicy:
    """Replace the workspace's quiet hours (validated by the caller's schema)."""
    policy = await session.get(MessagingPolicy, workspace_id)
    if policy is None:
        policy = MessagingPolicy(workspace_id=workspace_id)
        session.add(policy)
    policy.quiet_hours_start = quiet_hours_start
    policy.quiet_hours_end = quiet_hours_end
    policy.quiet_channels = sorted(set(quiet_channels))
    policy.default_timezone = default_timezone
    policy.updated_at = now
    await session.flush()
    return policy


async def list_caps(session: AsyncSession, *, workspace_id: int) -> list[FrequencyCap]:
    """The workspace's frequency caps."""
    rows = await session.scalars(
        select(FrequencyCap)
        .where(FrequencyCap.workspace_id == workspace_id)
        .order_by(FrequencyCap.id)
    )
    return list(rows.all())


async def create_cap(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel: str | None,
    max_messages: int,
    period_seconds: int,
    now: datetime,
) -> FrequencyCap:
    """A new frequency cap (validated by the caller's schema)."""
    cap = FrequencyCap(
        workspace_id=workspace_id,
        channel=channel,
        max_messages=max_messages,
        period_seconds=period_seconds,
        created_at=now,
    )
    session.add(cap)
    await session.flush()
    return cap


async def delete_cap(session: AsyncSession, *, workspace_id: int, cap_id: int) -> None:
    """Remove a frequency cap; NotFound when the workspace has no such cap."""
    result = await session.execute(
        delete(FrequencyCap).where(
            FrequencyCap.workspace_id == workspace_id, FrequencyCap.id == cap_id
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"No frequency cap {cap_id}.")


async def start_double_opt_in(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    topic_id: int,
    now: datetime,
    links: consent.Links,
    source: str = "api",
) -> tuple[str, Message | None]:
    """Start a double opt-in: the profile pending on the topic (an opted-in profile stays
    so) and, when pending, the confirmation email queued; the confirmation URL and that
    email (None when none is sent). UnprocessableInput naming `topic_id` for a topic without
    double opt-in, NotFound for a topic or profile not in the workspace."""
    url = await consent.request_opt_in(
        session,
        workspace_id=workspace_id,
        profile_id=profile_id,
        topic_id=topic_id,
        now=now,
        links=links,
        source=source,
    )
    topic = await topics.get_topic_or_raise(session, workspace_id=workspace_id, topic_id=topic_id)
    says = await consent.consents_of(session, workspace_id=workspace_id, profile_id=profile_id)
    if not any(say.topic_id == topic.id and say.state == PENDING for say in says):
        return url, None
    message = await send_opt_in_confirmation(
        session,
        workspace_id=workspace_id,
        profile_id=profile_id,
        topic_id=topic.id,
        topic_name=topic.name,
        confirmation_url=url,
        now=now,
    )
    return url, message


async def send_opt_in_confirmation(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    topic_id: int,
    topic_name: str,
    confirmation_url: str,
    now: datetime,
) -> Message:
    """Queue the double opt-in email carrying `confirmation_url` (transactional: it goes
    to a profile not yet subscribed), with the workspace's confirmation template, made from
    Clarion's default on first use."""
    template = await templates.get_template_by_name(
        session, workspace_id=workspace_id, name=CONFIRMATION_TEMPLATE
    )
    if template is None:
        template, version = await templates.create_template(
            session,
            workspace_id=workspace_id,
            name=CONFIRMATION_TEMPLATE,
            channel="email",
            category="transactional",
            topic_id=None,
            content=CONFIRMATION_CONTENT,
            now=now,
        )
    else:
        template, version = await templates.current_version(
            session, workspace_id=workspace_id, template_id=template.id
        )
    event = {
        "name": CONFIRMATION_EVENT,
        "properties": {
            "topic_id": topic_id,
            "topic_name": topic_name,
            "confirmation_url": confirmation_url,
        },
    }
    [message_id] = await delivery.queue_messages(
        session,
        workspace_id=workspace_id,
        requests=[
            delivery.MessageRequest(
                profile_id=profile_id,
                template_id=template.id,
                template_version_id=version.id,
                channel="email",
                idempotency_key=f"opt-in:{profile_id}:{topic_id}:{now.isoformat()}",
                origin="api",
                origin_id=f"topic:{topic_id}",
                category="transactional",
                context={"event": event},
            )
        ],
        now=now,
    )
    found = await session.get(Message, message_id)
    assert found is not None
    return found
