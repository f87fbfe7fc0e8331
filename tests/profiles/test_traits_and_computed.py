"""Traits (latest wins, history), computed traits, replays, groups and upserts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion.core.database import Database
from clarion.core.errors import InvalidInput
from clarion.profiles import queries, service
from tests.conftest import Tenant
from tests.profiles.conftest import Send, apply, identify, track
from tests.profiles.test_resolution import by


async def test_latest_identify_wins_per_key_and_history_records_changes(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(identify("u1", minute=10, plan="pro", city="Oslo"))
    await send(identify("u1", minute=5, plan="free", age=30))  # late, older: only new keys
    await send(identify("u1", minute=20, city=None))  # null is stored, not deleted
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    assert profile.traits == {"plan": "pro", "city": None, "age": 30}
    async with database.read_session() as session:
        changes, _ = await queries.list_trait_history(
            session, workspace_id=tenant.id, profile_id=profile.id, key=None, limit=100
        )
    rows = [(c.key, c.old, c.new, c.source) for c in changes]
    assert rows[:2] == [("city", "Oslo", None, "identify"), ("age", None, 30, "identify")]
    # One identify's keys come in no particular order (JSONB sorts them).
    assert sorted(rows[2:]) == [
        ("city", None, "Oslo", "identify"),
        ("plan", None, "pro", "identify"),
    ]


async def test_orders_money_and_counts(send: Send, database: Database, tenant: Tenant) -> None:
    await send(
        track("Order Completed", "u1", minute=1, revenue=19.99),
        track("Order Completed", "u1", minute=3, total="5.01", currency="usd"),
        track("Order Completed", "u1", minute=2, revenue=1000, currency="JPY"),
        {"type": "page", "userId": "u1", "name": "Home"},
        {"type": "screen", "userId": "u1", "name": "Cart"},
    )
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    computed = profile.computed
    assert computed["orders"] == 3
    assert computed["revenue"] == {"USD": 2500, "JPY": 1000}
    assert (computed["page_views"], computed["screen_views"]) == (1, 1)
    assert computed["last_order_at"].startswith("2026-01-01T00:03")


async def test_amounts_beyond_any_order_are_counted_as_orders_without_revenue(
    send: Send, database: Database, tenant: Tenant
) -> None:
    # Each once made the profile's computed traits unstorable (an integer past 64 bits), and
    # the events' processing failed for ever, holding back every later event of its lane.
    await send(
        track("Order Completed", "u1", minute=1, revenue=1e308),
        track("Order Completed", "u1", minute=2, revenue=-1e17),
        track("Order Completed", "u1", minute=3, total="9" * 400),
        track("Order Completed", "u1", minute=4, revenue=5, currency="GBP"),
    )
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    assert profile.computed["orders"] == 4
    assert profile.computed["revenue"] == {"GBP": 500}
    assert profile.computed["orders_by_currency"] == {"GBP": 1}


async def test_a_currency_is_three_ascii_letters_else_the_default(
    send: Send, database: Database, tenant: Tenant
) -> None:
    # "ßßß" upper-cases to "SSSSSS": kept as a currency, it failed the RFM boundaries'
    # three-letter column on PostgreSQL, and every recompute of the workspace with it.
    await send(
        track("Order Completed", "u1", minute=1, revenue=1, currency="ßßß"),
        track("Order Completed", "u1", minute=2, revenue=2, currency="éur"),
        track("Order Completed", "u1", minute=3, revenue=4, currency=" chf "),
    )
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    assert profile.computed["revenue"] == {"USD": 300, "CHF": 400}


async def test_replayed_events_are_not_counted_twice(
    send: Send, database: Database, tenant: Tenant
) -> None:
    records = await send(track("Order Completed", "u1", revenue=10), identify("u1", name="A"))
    await apply(database, tenant, records)
    await apply(database, tenant, records + records)
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None and profile.computed["orders"] == 1


async def test_a_rolled_back_batch_leaves_nothing(
    send: Send, database: Database, tenant: Tenant
) -> None:
    records = await send(track("Viewed", "u9"), apply_now=False)
    async with database.write_session() as session:
        await service.apply_events(
            session, workspace_id=tenant.id, events=records, now=datetime.now(UTC)
        )
        await session.rollback()
    assert await by(database, tenant, "user_id", "u9") is None
    await apply(database, tenant, records)
    profile = await by(database, tenant, "user_id", "u9")
    assert profile is not None and profile.computed["event_counts"] == {"Viewed": 1}


async def test_group_attaches_an_account(send: Send, database: Database, tenant: Tenant) -> None:
    await send(
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}},
        {"type": "group", "userId": "u2", "groupId": "acme", "traits": {"plan": "gold"}},
    )
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    async with database.read_session() as session:
        [view] = await queries.view_profiles(session, [profile])
    [account] = view.accounts
    assert (account.group_id, account.traits) == ("acme", {"name": "Acme", "plan": "gold"})


async def test_upsert_profile_links_by_email(database: Database, tenant: Tenant) -> None:
    now = datetime.now(UTC)
    async with database.write_session() as session:
        first = await service.upsert_profile(
            session, workspace_id=tenant.id, email="Ann@Example.com", traits={"vip": True}, now=now
        )
        second = await service.upsert_profile(
            session,
            workspace_id=tenant.id,
            user_id="ann",
            email="ann@example.com",
            phone="+47 (22) 33-44-55",
            traits={"vip": False},
            now=now,
            source="api",
        )
        await session.commit()
    assert first.id == second.id
    found = await by(database, tenant, "phone", "+4722334455")
    assert found is not None and found.id == first.id
    assert found.traits == {"vip": False, "email": "ann@example.com", "phone": "+47 (22) 33-44-55"}


async def test_upsert_profiles_in_one_pass_resolves_like_one_at_a_time(
    database: Database, tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    upserts = [
        service.ProfileUpsert(email="Bea@Example.com", traits={"plan": "free"}),
        service.ProfileUpsert(user_id="cy", traits={"plan": "pro"}),
        # Links the first row's profile to a user id, within the same batch.
        service.ProfileUpsert(user_id="bea", email="bea@example.com", traits={"plan": "plus"}),
        service.ProfileUpsert(user_id="cy", traits={"age": 41}),
    ]
    async with database.write_session() as session:
        answers = await service.upsert_profiles(
            session, workspace_id=tenant.id, upserts=upserts, now=now
        )
        await session.commit()
    ids = [profile_id for profile_id, _ in answers]
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]
    bea = await by(database, tenant, "user_id", "bea")
    cy = await by(database, tenant, "user_id", "cy")
    assert bea is not None and bea.id == ids[0] and bea.traits["plan"] == "plus"
    assert cy is not None and cy.traits == {"plan": "pro", "age": 41}

    async with database.write_session() as session:
        with pytest.raises(InvalidInput):
            await service.upsert_profiles(
                session, workspace_id=tenant.id, upserts=[service.ProfileUpsert()], now=now
            )
