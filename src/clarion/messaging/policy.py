"""What may be sent now: quiet hours (in the recipient's own time zone) and frequency caps
with priority arbitration. Transactional messages pass both.

Arbitration: when marketing messages to one profile compete for the slots a cap leaves,
they are ranked by priority (higher first), then by age (older first), and the slots go
down that ranking; the rest are refused, each naming the cap that refused it. Every worker
ranks the same contenders the same way. A delivery batch decides twice: while planning,
reading only, and again in the transaction that marks its messages `sending`, holding each
profile's lock (PostgreSQL advisory locks; SQLite has one writer). A batch planned before a
competitor was queued thus sees it sending, or sent, and yields: the cap always holds, and
priority decides among the messages visible when a batch plans.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.messaging.models import FrequencyCap, Message, MessagingPolicy

# Queued messages due within this long of a decision compete with it for the last slots.
ARBITRATION_WINDOW = timedelta(minutes=1)
MARKETING = "marketing"


def _zone(name: object, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if isinstance(candidate, str) and candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


_CLOCK = re.compile(r"([0-9]{2}):([0-9]{2})")  # ASCII digits: `\d` takes "٠٩" too


def parse_clock(text: str) -> time:
    """A "HH:MM" 24-hour wall time; ValueError when it is not one."""
    found = _CLOCK.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not HH:MM")
    return time(int(found[1]), int(found[2]))  # ValueError past 23:59


def quiet_until(
    now: datetime, *, timezone: object, policy: MessagingPolicy | None, channel: str
) -> datetime | None:
    """When the quiet hours that hold at `now` for this recipient end (an aware UTC
    instant), or None when it is not quiet for `channel`. Hours may span midnight
    ("21:00" to "08:00"); a local end that does not exist (a DST gap) moves forward."""
    if (
        policy is None
        or not policy.quiet_hours_start
        or not policy.quiet_hours_end
        or channel not in policy.quiet_channels
    ):
        return None
    zone = _zone(timezone, policy.default_timezone)
    local = now.astimezone(zone)
    start, end = parse_clock(policy.quiet_hours_start), parse_clock(policy.quiet_hours_end)
    if start == end:
        return None
    at = local.time()
    inside = start <= at < end if start < end else (at >= start or at < end)
    if not inside:
        return None
    day = local.date() if at < end else local.date() + timedelta(days=1)
    ending = datetime.combine(day, end, tzinfo=zone)
    # A wall time in a gap maps past it; going through UTC normalizes it.
    return ending.astimezone(ZoneInfo("UTC"))


@dataclass(frozen=True, slots=True)
class Contender:
    """A marketing message in the running for a profile's slots."""

    id: uuid.UUID
    profile_id: uuid.UUID
    channel: str
    priority: int
    created_at: datetime


def _applies(cap: FrequencyCap, channel: str) -> bool:
    return cap.channel is None or cap.channel == channel


def cap_reason(cap: FrequencyCap) -> str:
    """How a refusal names the cap that refused it."""
    scope = cap.channel or "all"
    return f"frequency_cap:{cap.id}:{scope}:{cap.max_messages}/{cap.period_seconds}s"


def arbitrate(
    contenders: Iterable[Contender],
    caps: Sequence[FrequencyCap],
    sent: dict[uuid.UUID, list[tuple[str, datetime]]],
    now: datetime,
) -> dict[uuid.UUID, str]:
    """The contenders refused by a cap, each with the reason naming it; `sent` holds each
    profile's marketing messages already sent (channel, sent time)."""
    refused: dict[uuid.UUID, str] = {}
    if not caps:
        return refused
    by_profile: dict[uuid.UUID, list[Contender]] = {}
    for contender in contenders:
        by_profile.setdefault(contender.profile_id, []).append(contender)
    for profile_id, queue in by_profile.items():
        used: dict[int, int] = {}
        for cap in caps:
            since = now - timedelta(seconds=cap.period_seconds)
            used[cap.id] = sum(
                1
                for channel, at in sent.get(profile_id, ())
                if at > since and _applies(cap, channel)
            )
        for contender in sorted(queue, key=lambda c: (-c.priority, c.created_at, c.id)):
            full = next(
                (
                    cap
                    for cap in caps
                    if _applies(cap, contender.channel) and used[cap.id] >= cap.max_messages
                ),
                None,
            )
            if full is not None:
                refused[contender.id] = cap_reason(full)
                continue
            for cap in caps:
                if _applies(cap, contender.channel):
                    used[cap.id] += 1
    return refused


async def cap_refusals(
    session: AsyncSession,
    *,
    workspace_id: int,
    messages: Sequence[Message],
    now: datetime,
    lock_profiles: bool = False,
) -> dict[uuid.UUID, str]:
    """Which of these marketing messages the workspace's frequency caps refuse now, ranked
    against every queued marketing message to the same profiles due by the end of the
    arbitration window; those sent within a cap's period, or being sent, hold their slots
    (3 queries). With `lock_profiles`, their profiles stay locked until the transaction
    ends, so that no other decision about them interleaves (PostgreSQL; a writing SQLite
    transaction is alone already)."""
    marketing = [m for m in messages if m.category == MARKETING]
    if not marketing:
        return {}
    caps = list(
        (
            await session.scalars(
                select(FrequencyCap)
                .where(FrequencyCap.workspace_id == workspace_id)
                .order_by(FrequencyCap.id)
            )
        ).all()
    )
    if not caps:
        return {}
    profiles = sorted({m.profile_id for m in marketing})
    if lock_profiles and session.get_bind().dialect.name == "postgresql":
        await _lock(session, workspace_id, profiles)
    longest = max(cap.period_seconds for cap in caps)
    contenders = {
        m.id: Contender(m.id, m.profile_id, m.channel, m.priority, m.created_at) for m in marketing
    }
    # Sent, or being sent by another worker right now: slots already taken.
    sent: dict[uuid.UUID, list[tuple[str, datetime]]] = {}
    for message_id, profile_id, channel, sent_at in await session.execute(
        select(Message.id, Message.profile_id, Message.channel, Message.sent_at).where(
            Message.workspace_id == workspace_id,
            Message.profile_id.in_(profiles),
            Message.category == MARKETING,
            (Message.sent_at > now - timedelta(seconds=longest)) | (Message.status == "sending"),
        )
    ):
        if message_id not in contenders:
            sent.setdefault(profile_id, []).append((channel, sent_at or now))
    for row in await session.execute(
        select(
            Message.id, Message.profile_id, Message.channel, Message.priority, Message.created_at
        ).where(
            Message.workspace_id == workspace_id,
            Message.profile_id.in_(profiles),
            Message.category == MARKETING,
            Message.status == "queued",
            Message.send_after <= now + ARBITRATION_WINDOW,
        )
    ):
        contenders.setdefault(row.id, Contender(*row))
    refused = arbitrate(contenders.values(), caps, sent, now)
    return {m.id: refused[m.id] for m in marketing if m.id in refused}


async def _lock(session: AsyncSession, workspace_id: int, profiles: Sequence[uuid.UUID]) -> None:
    """Take the profiles' transaction advisory locks, in one order everywhere (no deadlock);
    keyed (workspace, hash of the profile), apart from the single-key locks elsewhere."""
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(:workspace, h) FROM (SELECT DISTINCT hashtext(p) AS h"
            " FROM unnest(CAST(:profiles AS text[])) AS p ORDER BY 1) AS sorted_profiles"
        ),
        {"workspace": workspace_id, "profiles": [str(p) for p in profiles]},
    )


async def get_policy(session: AsyncSession, *, workspace_id: int) -> MessagingPolicy | None:
    """The workspace's sending policy, if it set one."""
    return await session.get(MessagingPolicy, workspace_id)
