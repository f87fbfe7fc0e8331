"""What a message is rendered from and where it goes: a profile read through the profiles
service becomes a `RenderContext` (`render_context`), and a recipient's address on each
channel kind is read from it (`address_for`).

Email and phone: the `email` / `phone` trait when it is a valid one (traits are the latest
values the customer gave, latest event wins), else the newest email / phone identity of the
profile's merge tree. Phones are in E.164-like form (`+` and digits).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.rendering import EventContext, Links, ProfileContext, RenderContext
from clarion.profiles import queries as profiles
from clarion.profiles.identity import EMAIL, PHONE, USER_ID, normalize_email, normalize_phone

PUSH_TOKEN_TRAITS = ("push_token", "device_token")


async def render_context(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    message_id: str | uuid.UUID,
    now: datetime,
    event: EventContext | None = None,
    journey: Mapping[str, Any] | None = None,
    links: Links = Links(),  # noqa: B008 - frozen, never mutated
) -> RenderContext:
    """The render context of one message to the profile (or the profile it was merged
    into): its traits, computed traits, user id, email and phone; NotFound when the
    workspace has no such profile."""
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    [view] = await profiles.view_profiles(session, [profile])
    return RenderContext(
        profile=profile_context(view),
        message_id=str(message_id),
        now=now,
        event=event,
        journey=journey,
        links=links,
    )


def profile_context(view: profiles.ProfileView) -> ProfileContext:
    """The recipient as templates see a profile already read with its identities (a
    canonical profile's view): its traits, computed traits, user id, email and phone."""
    newest: dict[str, str] = {}
    for identity in sorted(view.identities, key=lambda found: (found.created_at, found.id)):
        newest[identity.kind] = identity.value
    traits = dict(view.profile.traits)
    return ProfileContext(
        id=view.profile.id,
        user_id=newest.get(USER_ID),
        email=_email_trait(traits) or newest.get(EMAIL),
        phone=normalize_phone(traits.get("phone")) or newest.get(PHONE),
        traits=traits,
        computed=dict(view.profile.computed),
    )


def _email_trait(traits: Mapping[str, Any]) -> str | None:
    """The `email` trait as sent (stripped) when it is an email address."""
    email = traits.get("email")
    return email.strip() if isinstance(email, str) and normalize_email(email) else None


def address_for(kind: ChannelKind | str, profile_context: ProfileContext) -> str | None:
    """Where a message of `kind` goes for this recipient, or None when it has no address
    there: email the email (or a valid `email` trait), sms the phone (or a valid `phone`
    trait), push the `push_token` / `device_token` trait, inbox the profile id. A webhook's
    URL is the message's own, never the profile's: None."""
    traits = profile_context.traits
    if kind == "email":
        if profile_context.email:
            return profile_context.email
        return _email_trait(traits)
    if kind == "sms":
        return profile_context.phone or normalize_phone(traits.get("phone"))
    if kind == "push":
        for name in PUSH_TOKEN_TRAITS:
            token = traits.get(name)
            if isinstance(token, str) and token.strip():
                return token.strip()
        return None
    if kind == "inbox":
        return str(profile_context.id)
    return None
