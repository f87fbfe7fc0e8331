"""Consent and suppression as delivery sees them: `refusal` / `refusals`, the question asked
before every send, and the calls that change what they answer.

    refusal, refusals     None (send) or why not: `suppressed:<reason>` for any category;
                          for marketing `opted_out:<channel>`, `opted_out:topic:<id>`,
                          `pending:topic:<id>`, `no_consent:topic:<id>`
    set_consent           a profile's say on a channel or a topic (`consents.py`)
    consents_of           a profile's says
    suppress, unsuppress  the suppression list (`suppressions.py`); a complaint opts out
    request_opt_in        double opt-in: pending, and the confirmation URL
    normalize_address     the form addresses are matched in

Transactional messages pass every opt-out but never the suppression list.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import FieldError
from clarion.core.settings import SecretKeys, Settings
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.consent import topics
from clarion.messaging.consent.consents import (
    PENDING,
    consents_of,
    normalize_address,
    says_of,
    scope_of,
    set_consent,
)
from clarion.messaging.consent.suppressions import suppress, unsuppress
from clarion.messaging.consent.topics import CHANNELS, OPTED_IN, OPTED_OUT
from clarion.messaging.models import Consent, SubscriptionTopic, Suppression
from clarion.messaging.schemas import UnprocessableInput
from clarion.messaging.tracking import LinkSigner, confirm_url, preferences_url, unsubscribe_url
from clarion.profiles import queries as profiles

__all__ = [
    "MARKETING",
    "TRANSACTIONAL",
    "Links",
    "consents_of",
    "normalize_address",
    "refusal",
    "refusals",
    "request_opt_in",
    "set_consent",
    "suppress",
    "unsuppress",
]

MARKETING, TRANSACTIONAL = "marketing", "transactional"


@dataclass(frozen=True, slots=True)
class Links:
    """Signs the links of the consent pages; one per application (keys are derived once)."""

    signer: LinkSigner
    public_url: str

    @classmethod
    def from_settings(cls, settings: Settings, keys: SecretKeys) -> Links:
        """Links under `settings.public_url`, signed with the app's secret key (and those
        the previous keys signed accepted)."""
        return cls(LinkSigner(keys.current, keys.previous), settings.public_url)

    def unsubscribe(
        self,
        *,
        workspace_id: int,
        profile_id: uuid.UUID,
        topic_id: int | None = None,
        channel: ChannelKind | None = None,
        message_id: uuid.UUID | None = None,
    ) -> str:
        """The unsubscribe URL of a profile: from one topic, one channel, or (neither) all
        marketing; `message_id` names the message the link came in."""
        token = self.signer.sign_unsubscribe(
            workspace_id=workspace_id,
            profile_id=profile_id,
            topic_id=topic_id,
            channel=channel,
            message_id=message_id,
        )
        return unsubscribe_url(self.public_url, token)

    def preferences(self, *, workspace_id: int, profile_id: uuid.UUID) -> str:
        """The preferences page URL of a profile."""
        token = self.signer.sign_preferences(workspace_id=workspace_id, profile_id=profile_id)
        return preferences_url(self.public_url, token)

    def confirm(self, *, workspace_id: int, profile_id: uuid.UUID, topic_id: int) -> str:
        """The double opt-in confirmation URL of a profile for one topic."""
        token = self.signer.sign_confirm(
            workspace_id=workspace_id, profile_id=profile_id, topic_id=topic_id
        )
        return confirm_url(self.public_url, token)


async def refusal(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    channel: str,
    address: str | None,
    category: str,
    topic_id: int | None,
) -> str | None:
    """None when a message may be sent, else why not: `suppressed:<reason>` (any category),
    and for marketing `opted_out:<channel>`, `opted_out:topic:<id>`, `pending:topic:<id>` or
    `no_consent:topic:<id>`. What `refusals` answers for this one profile."""
    answers = await refusals(
        session,
        workspace_id=workspace_id,
        profile_ids=[profile_id],
        channel=channel,
        addresses={profile_id: address},
        category=category,
        topic_id=topic_id,
    )
    return answers[profile_id]


async def refusals(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_ids: Sequence[uuid.UUID],
    channel: str,
    addresses: dict[uuid.UUID, str | None],
    category: str,
    topic_id: int | None,
) -> dict[uuid.UUID, str | None]:
    """`refusal` for each profile (its address from `addresses`) in at most three queries,
    whatever their number. An unknown topic refuses marketing (`no_consent:topic:<id>`);
    an unknown channel or category is a ValueError: guessing could send unwanted mail."""
    if channel not in CHANNELS or category not in (MARKETING, TRANSACTIONAL):
        raise ValueError(f"unknown channel {channel!r} or category {category!r}")
    answers: dict[uuid.UUID, str | None] = dict.fromkeys(profile_ids)
    normalized = {
        profile_id: normalize_address(channel, address)
        for profile_id, address in addresses.items()
        if profile_id in answers and address
    }
    if normalized:
        rows = await session.execute(
            select(Suppression.address, Suppression.reason).where(
                Suppression.workspace_id == workspace_id,
                Suppression.channel == channel,
                Suppression.address.in_(set(normalized.values())),
            )
        )
        reasons: dict[str, str] = dict(rows.all())
        for profile_id, address in normalized.items():
            if address in reasons:
                answers[profile_id] = f"suppressed:{reasons[address]}"
    waiting = [profile_id for profile_id, answer in answers.items() if answer is None]
    if category != MARKETING or not waiting:
        return answers
    topic = None
    scopes = [channel]
    if topic_id is not None:
        topic = await session.scalar(
            select(SubscriptionTopic).where(
                SubscriptionTopic.workspace_id == workspace_id, SubscriptionTopic.id == topic_id
            )
        )
        if topic is not None:
            scopes.append(scope_of(topic.channel, topic.id))
    says = await says_of(session, workspace_id=workspace_id, profile_ids=waiting, scopes=scopes)
    for profile_id in waiting:
        answers[profile_id] = _marketing_refusal(channel, topic_id, topic, says[profile_id])
    return answers


def _marketing_refusal(
    channel: str, topic_id: int | None, topic: SubscriptionTopic | None, says: dict[str, Consent]
) -> str | None:
    channel_say = says.get(channel)
    if channel_say is not None and channel_say.state == OPTED_OUT:
        return f"opted_out:{channel}"
    if topic_id is None:
        return None
    if topic is None:
        return f"no_consent:topic:{topic_id}"
    say = says.get(scope_of(topic.channel, topic.id))
    state = say.state if say is not None else None
    if state == OPTED_OUT:
        return f"opted_out:topic:{topic_id}"
    if state == PENDING:
        return f"pending:topic:{topic_id}"
    if state is None and topic.default_state == OPTED_OUT:
        return f"no_consent:topic:{topic_id}"
    return None


async def request_opt_in(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    topic_id: int,
    now: datetime,
    links: Links,
    source: str = "api",
) -> str:
    """The confirmation URL (`/c/{token}` under the public URL) of a double opt-in topic,
    the profile's say set to pending unless it is opted in already (confirmed stays
    confirmed). UnprocessableInput (422) naming `topic_id` for a topic without double
    opt-in."""
    topic = await topics.get_topic_or_raise(session, workspace_id=workspace_id, topic_id=topic_id)
    if not topic.double_opt_in:
        raise UnprocessableInput(
            "This topic does not use double opt-in.",
            errors=[FieldError("topic_id", "has no double opt-in: set the consent instead")],
        )
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    scope = scope_of(topic.channel, topic.id)
    says = await says_of(
        session, workspace_id=workspace_id, profile_ids=[profile.id], scopes=[scope]
    )
    say = says[profile.id].get(scope)
    if say is None or say.state != OPTED_IN:
        await set_consent(
            session,
            workspace_id=workspace_id,
            profile_id=profile.id,
            channel=topic.channel,
            topic_id=topic.id,
            state=PENDING,
            source=source,
            now=now,
        )
    return links.confirm(workspace_id=workspace_id, profile_id=profile.id, topic_id=topic.id)
