"""A profile's say on each scope: "<channel>" (all marketing on that channel) or
"<channel>:<topic id>". On a topic it never spoke about, the topic's `default_state` holds.

- A profile's say over its merge tree is the most recent one on each scope (a tie: the
  stricter one), so a say made before a merge still counts after it.
- A change of state emits `Subscribed` / `Unsubscribed` for the profile into the event
  stream, with a messageId derived from the change, so a retry stores it once; setting the
  state a scope already has changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import FieldError
from clarion.ingest.internal import InternalEvent, emit_events
from clarion.messaging.consent import topics
from clarion.messaging.consent.topics import CHANNELS, OPTED_IN, OPTED_OUT, check_choice
from clarion.messaging.models import Consent, SubscriptionTopic
from clarion.messaging.schemas import UnprocessableInput
from clarion.profiles import queries as profiles
from clarion.profiles.models import Profile

PENDING = "pending"
STATES = (OPTED_IN, OPTED_OUT, PENDING)
# On a tie between two says of a merge tree, the stricter one wins.
_STRICTNESS = {OPTED_IN: 0, PENDING: 1, OPTED_OUT: 2}
_PHONE_NOISE = str.maketrans("", "", " \t-().")
# The events a change of state emits (journeys take them only from Clarion: its own).
SUBSCRIBED = "Subscribed"
UNSUBSCRIBED = "Unsubscribed"


def scope_of(channel: str, topic_id: int | None) -> str:
    """The scope a say is stored under: "<channel>" or "<channel>:<topic id>"."""
    return channel if topic_id is None else f"{channel}:{topic_id}"


def normalize_address(channel: str, address: str) -> str:
    """The stored form of an address: emails trimmed and lower-cased; phone numbers without
    spaces, dashes, dots or parentheses (a leading + kept); anything else trimmed."""
    address = address.strip()
    if channel == "email":
        return address.lower()
    if channel == "sms":
        return address.translate(_PHONE_NOISE).strip()  # noise may have hidden spaces
    return address


async def set_consent(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_id: uuid.UUID,
    channel: str,
    topic_id: int | None = None,
    state: str,
    source: str,
    now: datetime,
) -> Consent:
    """The profile's (canonical profile's) say on the scope, set to `state`; a change emits
    `Unsubscribed` (to opted_out) or `Subscribed` (to opted_in). Setting the state it already
    has changes nothing, not even its source. NotFound for a profile or topic not in the
    workspace, UnprocessableInput (422) naming the field for anything else wrong."""
    check_choice("channel", channel, CHANNELS)
    check_choice("state", state, STATES)
    if not 0 < len(source) <= 32:
        raise UnprocessableInput("Bad source.", errors=[FieldError("source", "1 to 32 characters")])
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    topic = None
    if topic_id is not None:
        topic = await topics.get_topic_or_raise(
            session, workspace_id=workspace_id, topic_id=topic_id
        )
        if topic.channel != channel:
            raise UnprocessableInput(
                "The topic is on another channel.",
                errors=[FieldError("topic_id", f"is a topic of {topic.channel}, not {channel}")],
            )
    scope = scope_of(channel, topic_id)
    row = await _own_say(session, workspace_id, profile.id, scope)
    if row is None:
        values = {
            "workspace_id": workspace_id,
            "profile_id": profile.id,
            "scope": scope,
            "channel": channel,
            "topic_id": topic_id,
            "state": state,
            "source": source,
            "updated_at": now,
        }
        insert = postgres_insert if _is_postgres(session) else sqlite_insert
        created = await session.scalar(
            insert(Consent)
            .values(values)
            .on_conflict_do_nothing(index_elements=["workspace_id", "profile_id", "scope"])
            .returning(Consent.id)
        )
        row = await _own_say(session, workspace_id, profile.id, scope)
        assert row is not None  # inserted now, or by a concurrent writer we now wait for
        if created is not None:
            await _announce(session, row, topic, previous=None, now=now)
            return row
    if row.state == state:
        return row
    previous = f"{row.state}@{row.updated_at.isoformat()}"
    row.state, row.source, row.updated_at = state, source, now
    await session.flush()
    await _announce(session, row, topic, previous=previous, now=now)
    return row


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _own_say(
    session: AsyncSession, workspace_id: int, profile_id: uuid.UUID, scope: str
) -> Consent | None:
    """The profile's own row for the scope, locked FOR UPDATE (PostgreSQL) and fresh."""
    return await session.scalar(
        select(Consent)
        .where(
            Consent.workspace_id == workspace_id,
            Consent.profile_id == profile_id,
            Consent.scope == scope,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def _announce(
    session: AsyncSession,
    row: Consent,
    topic: SubscriptionTopic | None,
    *,
    previous: str | None,
    now: datetime,
) -> None:
    """Emit the event of a change to `row` (none for pending); `previous` names the state it
    replaced, so the same change retried gets the same messageId."""
    name = {OPTED_OUT: UNSUBSCRIBED, OPTED_IN: SUBSCRIBED}.get(row.state)
    if name is None:
        return
    senders = await profiles.sender_ids(
        session, workspace_id=row.workspace_id, profile_ids=[row.profile_id]
    )
    user_id, anonymous_id = senders.get(row.profile_id, (None, None))
    cause = f"{row.profile_id}:{row.scope}:{previous or 'none'}:{row.state}"
    event = InternalEvent(
        workspace_id=row.workspace_id,
        message_id=f"clarion:consent:{cause}",
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=now,
        properties={
            "channel": row.channel,
            "topic_id": row.topic_id,
            "topic_name": topic.name if topic else None,
            "source": row.source,
        },
    )
    await emit_events(session, [event], now=now)


async def says_of(
    session: AsyncSession,
    *,
    workspace_id: int,
    profile_ids: Sequence[uuid.UUID],
    scopes: Sequence[str] | None = None,
) -> dict[uuid.UUID, dict[str, Consent]]:
    """Per profile, its say on each scope (of `scopes`, or all) over its merge tree, the most
    recent winning; one query whatever the number of profiles."""
    wanted = set(profile_ids)
    # Merged-away profiles keep their rows: the merge links are read in the same query
    # (profiles offers no batch form of `tree_ids`).
    query = (
        select(Consent, Profile.canonical_id)
        .join(Profile, Profile.id == Consent.profile_id)
        .where(
            Consent.workspace_id == workspace_id,
            or_(Profile.id.in_(wanted), Profile.canonical_id.in_(wanted)),
        )
    )
    if scopes is not None:
        query = query.where(Consent.scope.in_(scopes))
    found: dict[uuid.UUID, dict[str, Consent]] = {profile_id: {} for profile_id in wanted}
    for say, canonical_id in await session.execute(query):
        owners = {say.profile_id} if canonical_id is None else {say.profile_id, canonical_id}
        for owner in owners & wanted:
            held = found[owner].get(say.scope)
            if held is None or _rank(say) > _rank(held):
                found[owner][say.scope] = say
    return found


def _rank(say: Consent) -> tuple[datetime, int]:
    return say.updated_at, _STRICTNESS[say.state]


async def consents_of(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID
) -> list[Consent]:
    """The (canonical) profile's say on every scope it spoke about, by scope; NotFound for a
    profile not in the workspace."""
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    says = (await says_of(session, workspace_id=workspace_id, profile_ids=[profile.id]))[profile.id]
    return [says[scope] for scope in sorted(says)]
