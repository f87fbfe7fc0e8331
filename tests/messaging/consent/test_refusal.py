"""`refusal` and `refusals`: the question delivery asks before every send, answered from
the suppression list, the channel's and the topic's consent and the topic's default."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.messaging.consent import service
from clarion.messaging.consent.service import normalize_address, refusal, refusals
from tests.messaging.consent.conftest import Shop


async def ask(
    shop: Shop,
    profile_id: uuid.UUID,
    *,
    address: str | None = None,
    category: str = "marketing",
    topic_id: int | None = None,
    channel: str = "email",
) -> str | None:
    async with shop.database.read_session() as session:
        return await refusal(
            session,
            workspace_id=shop.tenant.id,
            profile_id=profile_id,
            channel=channel,
            address=address,
            category=category,
            topic_id=topic_id,
        )


async def suppress(shop: Shop, address: str, reason: str, channel: str = "email") -> bool:
    async with shop.database.write_session() as session:
        added = await service.suppress(
            session,
            workspace_id=shop.tenant.id,
            channel=channel,
            address=address,
            reason=reason,
            detail="",
            now=datetime.now(UTC),
        )
        await session.commit()
        return added


async def test_each_reason_of_a_refusal(shop: Shop) -> None:
    news = await shop.topic("News")  # default opted_in
    offers = await shop.topic("Offers", default_state="opted_out")
    digest = await shop.topic("Digest", double_opt_in=True)
    anyone = await shop.person("anyone", email="anyone@example.com")

    assert await ask(shop, anyone, address="anyone@example.com", topic_id=news) is None
    assert await ask(shop, anyone, topic_id=offers) == f"no_consent:topic:{offers}"
    assert await ask(shop, anyone, topic_id=digest) == f"no_consent:topic:{digest}"
    assert await ask(shop, anyone, topic_id=999_999) == "no_consent:topic:999999"
    await shop.say(anyone, "email", "opted_in", offers)
    assert await ask(shop, anyone, topic_id=offers) is None

    await shop.say(anyone, "email", "opted_out", news)
    assert await ask(shop, anyone, topic_id=news) == f"opted_out:topic:{news}"
    assert await ask(shop, anyone) is None  # no topic: only the channel's say counts
    assert await ask(shop, anyone, topic_id=news, category="transactional") is None

    async with shop.database.write_session() as session:
        await service.request_opt_in(
            session,
            workspace_id=shop.tenant.id,
            profile_id=anyone,
            topic_id=digest,
            now=datetime.now(UTC),
            links=shop.links,
        )
        await session.commit()
    assert await ask(shop, anyone, topic_id=digest) == f"pending:topic:{digest}"

    await shop.say(anyone, "email", "opted_out")
    for topic_id in (None, news, offers, digest):
        assert await ask(shop, anyone, topic_id=topic_id) == "opted_out:email"
        assert await ask(shop, anyone, topic_id=topic_id, category="transactional") is None
    assert await ask(shop, anyone, channel="sms") is None  # another channel's say

    assert await suppress(shop, "  AnyOne@Example.COM ", "hard_bounce")
    for category in ("marketing", "transactional"):
        refused = await ask(shop, anyone, address="anyone@example.com", category=category)
        assert refused == "suppressed:hard_bounce"
    assert await ask(shop, anyone, category="transactional") is None  # no address, no match
    sms = await ask(shop, anyone, address="anyone@example.com", channel="sms")
    assert sms is None  # suppressed on email only


async def test_suppression_is_idempotent_and_keeps_its_first_reason(shop: Shop) -> None:
    someone = await shop.person("someone", email="someone@example.com")
    assert await suppress(shop, "someone@example.com", "hard_bounce")
    assert not await suppress(shop, "SOMEONE@example.com", "complaint")
    assert await ask(shop, someone, address="someone@example.com") == "suppressed:hard_bounce"
    # The complaint still opted the profile out of marketing email.
    assert (await shop.states(someone))["email"] == ("opted_out", "complaint")


async def test_a_complaint_on_sms_opts_the_phone_owner_out_of_sms(shop: Shop) -> None:
    texter = await shop.person("texter", phone="+1 (555) 010-9999")
    assert await suppress(shop, "+1 555-010-9999", "complaint", channel="sms")
    assert await ask(shop, texter, address="+15550109999", channel="sms") == "suppressed:complaint"
    assert (await shop.states(texter))["sms"] == ("opted_out", "complaint")


async def test_a_say_made_before_a_merge_still_counts_after_it(shop: Shop) -> None:
    news = await shop.topic("News")
    by_email = await shop.person(None, email="merged@example.com")
    await shop.say(by_email, "email", "opted_out", news)
    by_user = await shop.person("merged-user")
    assert await ask(shop, by_user, topic_id=news) is None
    merged = await shop.person("merged-user", email="merged@example.com")
    assert merged == by_user and merged != by_email
    assert await ask(shop, merged, topic_id=news) == f"opted_out:topic:{news}"
    assert (await shop.states(merged))[f"email:{news}"][0] == "opted_out"


async def test_an_unknown_channel_or_category_is_a_programming_error(shop: Shop) -> None:
    anyone = await shop.person("anyone")
    with pytest.raises(ValueError, match="category"):
        await ask(shop, anyone, category="Marketing")
    with pytest.raises(ValueError, match="channel"):
        await ask(shop, anyone, channel="fax")


# Batch and single answers agree, over every combination


SAYS = (None, "opted_in", "opted_out")
TOPIC_SAYS = (None, "opted_in", "opted_out", "pending")


def expected(
    channel_say: str | None,
    topic_say: str | None,
    suppressed: bool,
    category: str,
    topic: tuple[int, str] | None,
) -> str | None:
    """What the rules say, written independently of the service."""
    if suppressed:
        return "suppressed:manual"
    if category == "transactional":
        return None
    if channel_say == "opted_out":
        return "opted_out:email"
    if topic is None:
        return None
    topic_id, default = topic
    if topic_say == "opted_out":
        return f"opted_out:topic:{topic_id}"
    if topic_say == "pending":
        return f"pending:topic:{topic_id}"
    if topic_say is None and default == "opted_out":
        return f"no_consent:topic:{topic_id}"
    return None


async def test_refusals_agree_with_refusal_and_the_rules_for_every_mix(shop: Shop) -> None:
    default_in = await shop.topic("In", double_opt_in=False)
    default_out = await shop.topic("Out", double_opt_in=True)
    people: dict[uuid.UUID, dict[str, Any]] = {}
    # Every pair of (channel say, topic say) for each topic, with and without suppression:
    # the second topic's say is the first's rotated, so both meet every channel say.
    combinations = itertools.product(SAYS, range(len(TOPIC_SAYS)), (False, True))
    for number, (channel_say, turn, suppressed) in enumerate(combinations):
        say_in, say_out = TOPIC_SAYS[turn], TOPIC_SAYS[(turn + 1) % len(TOPIC_SAYS)]
        email = f"p{number}@example.com"
        profile_id = await shop.person(f"p{number}", email=email)
        async with shop.database.write_session() as session:
            for topic_id, state in (
                (None, channel_say),
                (default_in, say_in),
                (default_out, say_out),
            ):
                if state is not None:
                    await service.set_consent(
                        session,
                        workspace_id=shop.tenant.id,
                        profile_id=profile_id,
                        channel="email",
                        topic_id=topic_id,
                        state=state,
                        source="test",
                        now=datetime.now(UTC),
                    )
            await session.commit()
        if suppressed:
            await suppress(shop, email, "manual")
        # Every other profile is asked about with no address: suppression needs one.
        address = email if number % 2 == 0 or suppressed else None
        people[profile_id] = {
            "address": address,
            "says": (channel_say, say_in, say_out),
            "suppressed": suppressed and address is not None,
        }
    topics = {
        None: None,
        default_in: (default_in, "opted_in"),
        default_out: (default_out, "opted_out"),
    }
    for (topic_id, topic), category in itertools.product(
        topics.items(), ("marketing", "transactional")
    ):
        async with shop.database.read_session() as session:
            batch = await refusals(
                session,
                workspace_id=shop.tenant.id,
                profile_ids=list(people),
                channel="email",
                addresses={p: facts["address"] for p, facts in people.items()},
                category=category,
                topic_id=topic_id,
            )
        assert set(batch) == set(people)
        for profile_id, facts in people.items():
            channel_say, say_in, say_out = facts["says"]
            topic_say = say_in if topic_id == default_in else say_out
            rule = expected(channel_say, topic_say, facts["suppressed"], category, topic)
            single = await ask(
                shop, profile_id, address=facts["address"], category=category, topic_id=topic_id
            )
            assert batch[profile_id] == single == rule, (facts, topic_id, category)


@asynccontextmanager
async def counting(session: AsyncSession) -> AsyncIterator[list[str]]:
    """The statements the session's own connection runs (not the engine's other work,
    such as SQLite's checkpoints)."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    connection = (await session.connection()).sync_connection
    assert connection is not None
    event.listen(connection, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(connection, "before_cursor_execute", record)


async def test_refusals_take_the_same_few_queries_whatever_the_count(shop: Shop) -> None:
    topic_id = await shop.topic("Weekly")
    ids = [await shop.person(f"c{n}", email=f"c{n}@example.com") for n in range(30)]
    used = []
    for count in (1, 5, 30):
        async with shop.database.read_session() as session, counting(session) as statements:
            answers = await refusals(
                session,
                workspace_id=shop.tenant.id,
                profile_ids=ids[:count],
                channel="email",
                addresses={p: f"c{n}@example.com" for n, p in enumerate(ids[:count])},
                category="marketing",
                topic_id=topic_id,
            )
        assert answers == dict.fromkeys(ids[:count])
        used.append(len(statements))
    assert used == [3, 3, 3]  # suppressions, the topic, the says


# Addresses


@given(st.text(max_size=40))
def test_normalizing_an_address_twice_changes_nothing(raw: str) -> None:
    for channel in ("email", "sms", "push"):
        once = normalize_address(channel, raw)
        assert normalize_address(channel, once) == once


@given(st.emails())
def test_emails_are_matched_whatever_their_case_and_spacing(email: str) -> None:
    assert normalize_address("email", f"  {email.upper()}\t") == normalize_address("email", email)


def test_phone_numbers_lose_their_punctuation_and_keep_their_plus() -> None:
    assert normalize_address("sms", " +1 (555) 010-9999 ") == "+15550109999"
    assert normalize_address("sms", "555.010.9999") == "5550109999"
    assert normalize_address("push", " Token-AbC ") == "Token-AbC"
