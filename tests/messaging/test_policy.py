"""Quiet hours in the recipient's zone, cap arbitration, and per-channel send rates."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from clarion.messaging.models import FrequencyCap, MessagingPolicy
from clarion.messaging.policy import Contender, arbitrate, quiet_until
from clarion.messaging.ratelimit import LocalRateLimiter, RedisRateLimiter
from tests.conftest import unreachable

REDIS_URL = "redis://127.0.0.1:6379/0"
NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)


def quiet(start: str, end: str, channels: tuple[str, ...] = ("email",)) -> MessagingPolicy:
    return MessagingPolicy(
        workspace_id=1,
        quiet_hours_start=start,
        quiet_hours_end=end,
        quiet_channels=list(channels),
        default_timezone="Europe/Paris",
        updated_at=NOW,
    )


def test_quiet_hours_span_midnight_in_the_recipients_zone() -> None:
    nights = quiet("21:00", "08:00")
    # 22:30 UTC is 23:30 in Paris (winter time, until 02:00 on 29 March): quiet until 08:00
    # local, which by then is summer time (06:00 UTC).
    assert quiet_until(NOW, timezone=None, policy=nights, channel="email") == datetime(
        2026, 3, 29, 6, 0, tzinfo=UTC
    )
    # In New York it is 18:30: not quiet. In Tokyo 07:30: quiet for 30 more minutes.
    assert quiet_until(NOW, timezone="America/New_York", policy=nights, channel="email") is None
    assert quiet_until(NOW, timezone="Asia/Tokyo", policy=nights, channel="email") == NOW + (
        timedelta(minutes=30)
    )
    # Another channel, no policy, or a zone that does not exist (the default is used).
    assert quiet_until(NOW, timezone=None, policy=nights, channel="sms") is None
    assert quiet_until(NOW, timezone=None, policy=None, channel="email") is None
    assert quiet_until(NOW, timezone="Mars/Base", policy=nights, channel="email") is not None


def test_quiet_hours_within_a_day_and_their_edges() -> None:
    lunch = quiet("12:00", "14:00")
    noon_paris = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)  # 12:00 in Paris (UTC+2)
    assert quiet_until(noon_paris, timezone=None, policy=lunch, channel="email") == datetime(
        2026, 7, 1, 12, 0, tzinfo=UTC
    )
    assert quiet_until(noon_paris - timedelta(seconds=1), timezone=None, policy=lunch,
                       channel="email") is None  # fmt: skip
    assert quiet_until(noon_paris + timedelta(hours=2), timezone=None, policy=lunch,
                       channel="email") is None  # fmt: skip


def test_a_quiet_end_inside_a_dst_gap_moves_past_it() -> None:
    # Quiet until 02:30 local on the night Paris jumps from 02:00 to 03:00.
    gap = quiet("23:00", "02:30")
    at = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # 00:30 in Paris
    ends = quiet_until(at, timezone=None, policy=gap, channel="email")
    assert ends is not None and ends > at
    assert ends <= datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 summer time at most


def cap(cap_id: int, channel: str | None, max_messages: int, period: int) -> FrequencyCap:
    return FrequencyCap(
        id=cap_id, workspace_id=1, channel=channel, max_messages=max_messages,
        period_seconds=period, created_at=NOW,
    )  # fmt: skip


def test_arbitration_gives_the_free_slots_to_the_highest_priority_then_the_oldest() -> None:
    profile = uuid.uuid4()
    ids = [uuid.UUID(int=n) for n in range(4)]
    contenders = [
        Contender(ids[0], profile, "email", 0, NOW - timedelta(minutes=3)),
        Contender(ids[1], profile, "email", 5, NOW),
        Contender(ids[2], profile, "email", 0, NOW - timedelta(minutes=5)),
        Contender(ids[3], profile, "sms", 0, NOW),
    ]
    daily = cap(7, "email", 3, 86_400)
    sent = {profile: [("email", NOW - timedelta(hours=2))]}  # one slot of three taken
    refused = arbitrate(contenders, [daily], sent, NOW)
    assert refused == {ids[0]: "frequency_cap:7:email:3/86400s"}  # the youngest of priority 0
    # A cap on every channel also counts the SMS; an old send no longer counts.
    every = cap(8, None, 2, 3_600)
    refused = arbitrate(contenders, [every], {profile: [("sms", NOW - timedelta(hours=2))]}, NOW)
    assert set(refused) == {ids[0], ids[3]}
    assert all(r.startswith("frequency_cap:8:all:2/3600s") for r in refused.values())
    # The order the contenders come in does not matter: every worker decides the same.
    assert arbitrate(reversed(contenders), [every], {}, NOW) == arbitrate(
        contenders, [every], {}, NOW
    )
    assert arbitrate(contenders, [], sent, NOW) == {}


async def test_a_local_bucket_spaces_sends_at_the_rate() -> None:
    limiter = LocalRateLimiter()
    waits = [await limiter.wait(1, 10.0) for _ in range(15)]
    assert waits[:10] == [0.0] * 10  # a burst of one second's worth
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], abs=0.02)
    assert await limiter.wait(2, 10.0) == 0.0  # another channel has its own bucket


async def test_a_redis_bucket_is_shared_by_every_process() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        await client.aclose()
        unreachable("Redis", exc)
    prefix = f"clarion:test:{uuid.uuid4().hex}:"
    try:
        # Two limiters stand for two worker processes.
        first, second = (
            RedisRateLimiter(client, prefix=prefix),
            RedisRateLimiter(client, prefix=prefix),
        )
        waits = await asyncio.gather(*(each.wait(5, 4.0) for each in [first, second] * 4))
        assert sorted(waits)[:4] == [0.0] * 4
        assert sorted(waits)[4:] == pytest.approx([0.25, 0.5, 0.75, 1.0], abs=0.05)
    finally:
        await client.delete(f"{prefix}5")
        await client.aclose()
