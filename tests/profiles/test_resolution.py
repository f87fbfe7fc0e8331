"""Identity resolution: identify links, alias merges, refusals, loops, mid-batch merges."""

from __future__ import annotations

from clarion.core.database import Database
from clarion.profiles import queries
from clarion.profiles.identity import SHARED_DEVICE_USER_IDS
from clarion.profiles.models import Profile
from tests.conftest import Tenant
from tests.profiles.conftest import Send, alias, identify, track
from tests.support import plan_of


async def by(database: Database, tenant: Tenant, kind: str, value: str) -> Profile | None:
    async with database.read_session() as session:
        return await queries.get_by_identity(
            session, workspace_id=tenant.id, kind=kind, value=value
        )


async def pid(database: Database, tenant: Tenant, kind: str, value: str) -> object:
    """The id of the canonical profile owning an identity (None if none)."""
    profile = await by(database, tenant, kind, value)
    return None if profile is None else profile.id


async def canonical_count(database: Database, tenant: Tenant) -> int:
    async with database.read_session() as session:
        profiles, _ = await queries.list_profiles(session, workspace_id=tenant.id, limit=1000)
    return len(profiles)


async def merges_of(database: Database, tenant: Tenant, profile: Profile) -> list[tuple[str, str]]:
    async with database.read_session() as session:
        merges = await queries.list_merges(session, workspace_id=tenant.id, profile_id=profile.id)
    return [(m.status, m.reason) for m in merges]


async def test_identify_links_anonymous_history_to_the_user(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(track("Product Viewed", anonymous_id="anon-1", minute=1))
    await send(identify("u1", "anon-1", minute=2, name="Ada"))
    await send(track("Product Viewed", anonymous_id="anon-1", minute=3))

    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    assert profile.id == await pid(database, tenant, "anonymous_id", "anon-1")
    assert profile.traits == {"name": "Ada"}
    assert profile.computed["event_counts"] == {"Product Viewed": 2}
    assert await canonical_count(database, tenant) == 1


async def test_alias_merges_two_profiles_and_events_follow(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(
        track("Cart Viewed", anonymous_id="visitor", minute=1),
        identify("u1", minute=2, plan="pro"),
        track("Order Completed", user_id="u1", minute=3, revenue=10),
    )
    assert await canonical_count(database, tenant) == 2
    await send(alias("visitor", "u1", minute=4))
    merged = await by(database, tenant, "anonymous_id", "visitor")
    assert merged is not None and merged.id == await pid(database, tenant, "user_id", "u1")
    assert merged.computed["event_counts"] == {"Cart Viewed": 1, "Order Completed": 1}
    assert merged.first_seen_at is not None and merged.first_seen_at.minute == 1
    assert await canonical_count(database, tenant) == 1
    assert await merges_of(database, tenant, merged) == [("merged", "alias")]
    async with database.read_session() as session:
        events, _ = await queries.list_timeline(
            session, workspace_id=tenant.id, profile_id=merged.id, limit=10
        )
    assert [e.type for e in events] == ["alias", "track", "identify", "track"]


async def test_tracked_events_follow_merges_and_keep_to_the_names_asked(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(
        track("Cart Viewed", anonymous_id="visitor", minute=1),
        track("Order Completed", user_id="u1", minute=3, revenue=10),
        track("Product Viewed", user_id="u1", minute=4),
    )
    await send(alias("visitor", "u1", minute=5))
    merged = await by(database, tenant, "user_id", "u1")
    assert merged is not None
    async with database.read_session() as session:
        every = await queries.tracked_events(
            session, workspace_id=tenant.id, profile_ids=[merged.id]
        )
        some = await queries.tracked_events(
            session,
            workspace_id=tenant.id,
            profile_ids=[merged.id],
            names={"Cart Viewed", "Order Completed"},
        )
        none = await queries.tracked_events(
            session, workspace_id=tenant.id, profile_ids=[merged.id], names=set()
        )
    assert [e.name for e in every[merged.id]] == [
        "Cart Viewed",
        "Order Completed",
        "Product Viewed",
    ]
    assert [e.name for e in some[merged.id]] == ["Cart Viewed", "Order Completed"]
    assert some[merged.id][1].properties == {"revenue": 10}
    assert none == {merged.id: []}


async def test_two_user_ids_are_never_merged(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(identify("u1", email="Same@Example.com"), identify("u2", minute=1))
    await send(identify("u2", minute=2, email=" same@example.COM "))
    await send(alias("u1", "u2", minute=3))
    u1, u2 = (
        await by(database, tenant, "user_id", "u1"),
        await by(database, tenant, "user_id", "u2"),
    )
    assert u1 is not None and u2 is not None and u1.id != u2.id
    assert u1.id == await pid(database, tenant, "email", "SAME@example.com")
    assert u2.traits["email"] == " same@example.COM "  # the trait as sent; the identity refused
    assert await merges_of(database, tenant, u2) == [("refused", "user_id_conflict")]


async def test_alias_loops_and_alias_to_itself(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(
        track("Seen", anonymous_id="a", minute=1),
        alias("a", "b", minute=2),
        alias("b", "a", minute=3),
        alias("b", "b", minute=4),
    )
    await send(alias("b", "a", minute=5), alias("a", "b", minute=6))
    profile = await by(database, tenant, "user_id", "b")
    assert profile is not None and profile.id == await pid(database, tenant, "anonymous_id", "a")
    assert await canonical_count(database, tenant) == 1
    assert await merges_of(database, tenant, profile) == []
    assert profile.computed["event_counts"] == {"Seen": 1}


async def test_a_batch_with_identify_alias_and_tracks_for_the_same_people(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(
        track("Viewed", anonymous_id="x", minute=1),
        track("Viewed", anonymous_id="y", minute=2),
        identify("alice", "x", minute=3, name="Alice"),
        track("Clicked", anonymous_id="y", minute=4),
        alias("y", "alice", minute=5),
        track("Viewed", anonymous_id="y", minute=6),
        identify("bob", "z", minute=7),
        alias("z", "alice", minute=8),
    )
    alice = await by(database, tenant, "user_id", "alice")
    assert alice is not None
    assert alice.id == await pid(database, tenant, "anonymous_id", "x")
    assert alice.id == await pid(database, tenant, "anonymous_id", "y")
    assert alice.computed["event_counts"] == {"Viewed": 3, "Clicked": 1}
    bob = await by(database, tenant, "anonymous_id", "z")
    assert bob is not None and bob.id != alice.id
    assert await canonical_count(database, tenant) == 2
    assert ("refused", "user_id_conflict") in await merges_of(database, tenant, alice)


async def test_shared_device_guard(send: Send, database: Database, tenant: Tenant) -> None:
    users = [f"user-{i}" for i in range(SHARED_DEVICE_USER_IDS + 1)]
    for minute, user in enumerate(users):
        await send(identify(user, "kiosk", minute=minute), track("Used", user, "kiosk", minute))
    first = await by(database, tenant, "anonymous_id", "kiosk")
    assert first is not None and first.id == await pid(database, tenant, "user_id", users[0])
    reasons = []
    for user in users[1:]:
        profile = await by(database, tenant, "user_id", user)
        assert profile is not None and profile.id != first.id
        assert profile.computed["event_counts"] == {"Used": 1}  # the event went to the user
        reasons += [r for _, r in await merges_of(database, tenant, profile)]
    assert reasons.count("shared_device") == 2
    assert reasons.count("user_id_conflict") == SHARED_DEVICE_USER_IDS - 2


async def test_tracked_events_look_each_event_up_by_key(
    send: Send, database: Database, tenant: Tenant
) -> None:
    """On PostgreSQL the timeline's events are looked up by primary key row by row, however
    little the planner knows: with no statistics (a table just filled) it took the event
    filters for a few rows and scanned the whole log instead (6.6 s for 20 profiles)."""
    if database.is_sqlite:
        return  # SQLite plans from the statistics each process samples (core/database.py)
    await send(track("Order Completed", user_id="u9", minute=1, revenue=10))
    profile = await by(database, tenant, "user_id", "u9")
    assert profile is not None

    async def read() -> None:
        async with database.read_session() as session:
            await queries.tracked_events(
                session, workspace_id=tenant.id, profile_ids=[profile.id], names={"Order Completed"}
            )

    plan = await plan_of(database, read, "profile_events")
    assert "Index Scan using pk_events on events" in plan, plan
    assert "Seq Scan on events" not in plan and "Hash Join" not in plan, plan


async def test_profiles_read_by_key_never_through_the_workspace_index(
    send: Send, database: Database, tenant: Tenant
) -> None:
    """On PostgreSQL, profiles asked for by id are found by primary key however little the
    planner knows: with no statistics (a table just filled) `workspace_id = ? AND id IN
    (...)` read every profile of the workspace through its index instead."""
    if database.is_sqlite:
        return  # SQLite plans from the statistics each process samples (core/database.py)
    for n in range(3):
        await send(identify(f"u{n}", f"anon{n}"), track("Order Completed", f"u{n}", minute=n))
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None
    ids = [profile.id]

    async def canonical() -> None:
        async with database.write_session() as session:
            await queries.canonical_profiles(session, workspace_id=tenant.id, profile_ids=ids)

    async def trees() -> None:
        async with database.read_session() as session:
            await queries.tracked_events(session, workspace_id=tenant.id, profile_ids=ids)

    async def apply() -> None:
        await send(track("Order Completed", "u1", minute=9))

    async def canonical_of() -> None:
        async with database.read_session() as session:
            await queries.canonical_ids(session, workspace_id=tenant.id, profile_ids=ids)

    for run, matching in (
        (canonical, "FROM profiles"),
        (trees, "canonical_id = ANY"),
        (canonical_of, "FROM profiles"),
        (apply, "created_at, updated_at FROM profiles"),  # the processing run's read
    ):
        plan = await plan_of(database, run, matching)
        assert "ix_profiles_workspace_id" not in plan, plan
        assert "pk_profiles" in plan, plan


async def test_a_profile_merged_into_one_created_later_in_the_same_batch(
    send: Send, database: Database, tenant: Tenant
) -> None:
    """The absorbed row points at a survivor the batch also creates: the survivor's row must
    be written first, or SQLite's (immediate) self-referencing key refuses the batch."""
    await send(
        track("Cart Viewed", anonymous_id="visitor", minute=1, step=1),
        identify("u1", minute=2, plan="pro"),
        alias("visitor", "u1", minute=3),
        track("Order Completed", user_id="u1", minute=4),
    )
    merged = await by(database, tenant, "anonymous_id", "visitor")
    assert merged is not None and merged.id == await pid(database, tenant, "user_id", "u1")
    assert merged.canonical_id is None and merged.traits == {"plan": "pro"}
    assert merged.computed["event_counts"] == {"Cart Viewed": 1, "Order Completed": 1}
    assert await canonical_count(database, tenant) == 1
    assert await merges_of(database, tenant, merged) == [("merged", "alias")]


async def test_an_email_trait_with_a_line_break_is_no_email_identity(
    send: Send, database: Database, tenant: Tenant
) -> None:
    """Like any other malformed email, it stays a trait as sent and identifies nobody: as an
    address it would smuggle headers into a message."""
    injected = "ann@example.com\r\nBcc: all@example.com"
    await send(
        identify("u1", minute=1, email=injected),
        identify("u2", minute=2, email="bea@example.com\nx"),
        identify("u3", minute=3, email="cy@example.com\u2028"),
    )
    for user, email in (("u1", injected), ("u2", "bea@example.com\nx")):
        profile = await by(database, tenant, "user_id", user)
        assert profile is not None and profile.traits == {"email": email}
        async with database.read_session() as session:
            [view] = await queries.view_profiles(session, [profile])
        assert [(i.kind, i.value) for i in view.identities] == [("user_id", user)]
    assert await pid(database, tenant, "email", "cy@example.com") is not None  # trimmed
    assert await canonical_count(database, tenant) == 3


async def test_an_email_with_an_inner_space_is_no_email_identity(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(
        identify("u1", minute=1, email="ann b@example.com"),
        identify("u2", minute=2, email="  Bea@Example.COM "),
    )
    profile = await by(database, tenant, "user_id", "u1")
    assert profile is not None and profile.traits == {"email": "ann b@example.com"}
    async with database.read_session() as session:
        [view] = await queries.view_profiles(session, [profile])
    assert [(i.kind, i.value) for i in view.identities] == [("user_id", "u1")]
    assert await pid(database, tenant, "email", "bea@example.com") == await pid(
        database, tenant, "user_id", "u2"
    )


async def test_a_phone_of_digits_other_than_ascii_is_no_phone_identity(
    send: Send, database: Database, tenant: Tenant
) -> None:
    """Arabic-Indic, fullwidth or superscript digits are digits to Python, not to a carrier."""
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "4722334455")
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in "4722334455")
    odd = {"u1": f"+{arabic_indic}", "u2": f"+{fullwidth}", "u3": "+47 22 33 44 5\u2075"}
    await send(
        *(identify(user, minute=n, phone=phone) for n, (user, phone) in enumerate(odd.items())),
        identify("u4", minute=5, phone="+47 (22) 33-44-66"),
    )
    for user, phone in odd.items():
        profile = await by(database, tenant, "user_id", user)
        assert profile is not None and profile.traits == {"phone": phone}
        async with database.read_session() as session:
            [view] = await queries.view_profiles(session, [profile])
        assert [(i.kind, i.value) for i in view.identities] == [("user_id", user)]
    assert await pid(database, tenant, "phone", "+4722334466") == await pid(
        database, tenant, "user_id", "u4"
    )
