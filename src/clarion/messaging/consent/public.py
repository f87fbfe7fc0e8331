"""What the public pages do for the person a signed link names: unsubscribe (and undo),
the preferences page, and double opt-in confirmation.

Callers pass only what the verified token holds: its workspace, profile and topic. Every
lookup is scoped by that workspace, so a token of one workspace can never reach another's
profiles or topics (they read as NotFound).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import NotFound
from clarion.messaging import messages
from clarion.messaging.consent import consents, service, topics
from clarion.messaging.consent.consents import scope_of
from clarion.messaging.consent.service import Links
from clarion.messaging.consent.topics import CHANNELS, OPTED_IN, OPTED_OUT
from clarion.messaging.models import Message, SubscriptionTopic
from clarion.profiles import queries as profiles
from clarion.profiles.identity import EMAIL, PHONE
from clarion.workspaces import service as workspaces

# How each channel's messages are called on the pages.
CHANNEL_WORDS = {
    "email": "emails",
    "sms": "text messages",
    "push": "push notifications",
    "inbox": "in-app messages",
    "webhook": "webhook messages",
}
# Channels a profile can receive only with the identity named here.
_NEEDS_IDENTITY = {"email": EMAIL, "sms": PHONE}


@dataclass(frozen=True, slots=True)
class Unsubscription:
    """What an unsubscribe link covers, said in words, and the scopes it sets."""

    workspace_name: str
    profile_id: uuid.UUID
    scopes: list[tuple[str, int | None]]
    what: str


async def describe_unsubscribe(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    topic_id: int | None,
    channel: str | None,
    message_id: uuid.UUID | None = None,
) -> Unsubscription:
    """What the link unsubscribes from: one topic, all marketing on one channel, or all
    marketing on every channel. A topic deleted since the link was sent in `message_id`:
    all marketing on that message's channel. NotFound for a profile or topic not in the
    workspace."""
    workspace = await workspaces.get_workspace(session, workspace_id=workspace_id)
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    if topic_id is not None:
        try:
            topic = await topics.get_topic_or_raise(
                session, workspace_id=workspace_id, topic_id=topic_id
            )
        except NotFound:
            # Deleted since the link was sent: the channel of the message it came in.
            channel = await _channel_of_gone_topic(
                session, workspace_id, profile_id, topic_id, message_id
            )
            if channel is None:
                raise
        else:
            what = f"{topic.name} ({CHANNEL_WORDS[topic.channel]})"
            return Unsubscription(workspace.name, profile.id, [(topic.channel, topic.id)], what)
    scopes: list[tuple[str, int | None]]
    if channel is not None:
        scopes, what = [(channel, None)], f"all marketing {CHANNEL_WORDS[channel]}"
    else:
        scopes, what = [(kind, None) for kind in CHANNELS], "all marketing messages"
    return Unsubscription(workspace.name, profile.id, scopes, what)


async def _channel_of_gone_topic(
    session: AsyncSession,
    workspace_id: int,
    profile_id: uuid.UUID,
    topic_id: int,
    message_id: uuid.UUID | None,
) -> str | None:
    """The channel of the message an unsubscribe link of a topic came in, when that message
    is the workspace's, to the profile, of that topic (so the topic was the workspace's, and
    is gone); None otherwise."""
    if message_id is None:
        return None
    message = await session.get(Message, message_id)
    if (
        message is None
        or message.workspace_id != workspace_id
        or message.profile_id != profile_id
        or message.topic_id != topic_id
        or message.channel not in CHANNEL_WORDS
    ):
        return None
    return message.channel


async def set_unsubscription(
    session: AsyncSession,
    *,
    workspace_id: int,
    unsubscription: Unsubscription,
    subscribed: bool,
    source: str,
    now: datetime,
) -> None:
    """Opt the profile out of (or, to undo, back into) every scope the link covers."""
    for channel, topic_id in unsubscription.scopes:
        await service.set_consent(
            session,
            workspace_id=workspace_id,
            profile_id=unsubscription.profile_id,
            channel=channel,
            topic_id=topic_id,
            state=OPTED_IN if subscribed else OPTED_OUT,
            source=source,
            now=now,
        )


@dataclass(frozen=True, slots=True)
class TopicChoice:
    """A topic on the preferences page with the profile's state on it now."""

    topic_id: int
    name: str
    description: str
    channel: str
    state: str
    double_opt_in: bool


@dataclass(frozen=True, slots=True)
class Preferences:
    """Everything the preferences page shows for one profile."""

    workspace_name: str
    profile_id: uuid.UUID
    has_email: bool
    all_email_off: bool
    topics: list[TopicChoice]


async def get_preferences(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID
) -> Preferences:
    """The topics of every channel the profile can receive (email needs an email, SMS a
    phone) with its state on each, and whether it left all marketing email; NotFound for a
    profile not in the workspace."""
    workspace = await workspaces.get_workspace(session, workspace_id=workspace_id)
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    [view] = await profiles.view_profiles(session, [profile])
    kinds = {identity.kind for identity in view.identities}
    reachable = [c for c in CHANNELS if c not in _NEEDS_IDENTITY or _NEEDS_IDENTITY[c] in kinds]
    rows = await session.scalars(
        select(SubscriptionTopic)
        .where(
            SubscriptionTopic.workspace_id == workspace_id,
            SubscriptionTopic.channel.in_(reachable),
        )
        .order_by(SubscriptionTopic.channel, SubscriptionTopic.name)
    )
    found = rows.all()
    says = (await consents.says_of(session, workspace_id=workspace_id, profile_ids=[profile.id]))[
        profile.id
    ]
    choices = []
    for topic in found:
        say = says.get(scope_of(topic.channel, topic.id))
        state = say.state if say is not None else topic.default_state
        choices.append(
            TopicChoice(
                topic.id, topic.name, topic.description, topic.channel, state, topic.double_opt_in
            )
        )
    email_say = says.get("email")
    return Preferences(
        workspace_name=workspace.name,
        profile_id=profile.id,
        has_email="email" in reachable,
        all_email_off=email_say is not None and email_say.state == OPTED_OUT,
        topics=choices,
    )


async def save_preferences(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    subscribed: Collection[int],
    all_email_off: bool,
    now: datetime,
    links: Links,
) -> Preferences:
    """Apply the page's form (source "preferences_page"): topics in `subscribed` opted in
    (double opt-in ones pending, their confirmation email queued as the API's opt-in
    queues it), the others shown opted out, and all marketing email off or on. Only what
    changed is written; ids of topics the page does not show are ignored. The page's new
    state."""
    shown = await get_preferences(session, workspace_id=workspace_id, profile_id=profile_id)
    source = "preferences_page"
    for choice in shown.topics:
        wanted = choice.topic_id in subscribed
        if wanted and choice.state == OPTED_OUT and choice.double_opt_in:
            await messages.start_double_opt_in(
                session,
                workspace_id=workspace_id,
                profile_id=shown.profile_id,
                topic_id=choice.topic_id,
                now=now,
                links=links,
                source=source,
            )
        elif wanted != (choice.state != OPTED_OUT):
            await service.set_consent(
                session,
                workspace_id=workspace_id,
                profile_id=shown.profile_id,
                channel=choice.channel,
                topic_id=choice.topic_id,
                state=OPTED_IN if wanted else OPTED_OUT,
                source=source,
                now=now,
            )
    if shown.has_email and all_email_off != shown.all_email_off:
        await service.set_consent(
            session,
            workspace_id=workspace_id,
            profile_id=shown.profile_id,
            channel="email",
            state=OPTED_OUT if all_email_off else OPTED_IN,
            source=source,
            now=now,
        )
    return await get_preferences(session, workspace_id=workspace_id, profile_id=profile_id)


async def describe_confirmation(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID, topic_id: int
) -> tuple[str, SubscriptionTopic]:
    """The workspace's name and the topic a confirmation link is for; NotFound for a profile
    or topic not in the workspace."""
    workspace = await workspaces.get_workspace(session, workspace_id=workspace_id)
    await profiles.get_profile_or_raise(session, workspace_id=workspace_id, profile_id=profile_id)
    topic = await topics.get_topic_or_raise(session, workspace_id=workspace_id, topic_id=topic_id)
    return workspace.name, topic


async def confirm(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID, topic_id: int, now: datetime
) -> None:
    """Opt the profile in to the topic (source "confirmation")."""
    topic = await topics.get_topic_or_raise(session, workspace_id=workspace_id, topic_id=topic_id)
    await service.set_consent(
        session,
        workspace_id=workspace_id,
        profile_id=profile_id,
        channel=topic.channel,
        topic_id=topic.id,
        state=OPTED_IN,
        source="confirmation",
        now=now,
    )
