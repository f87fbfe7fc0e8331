"""Un-merge: exact inverse of a merge, and never silently re-merged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion.core.database import Database
from clarion.core.errors import Conflict, NotFound
from clarion.profiles import merges, queries
from clarion.profiles.models import Profile
from tests.conftest import Tenant
from tests.profiles.conftest import Send, alias, identify, track
from tests.profiles.test_resolution import by


async def test_unmerge_restores_both_profiles(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(
        identify(anonymous_id="v", minute=1, plan="free", name="Visitor"),
        track("Viewed", anonymous_id="v", minute=1),
        identify("u1", minute=2, plan="pro"),
        track("Order Completed", "u1", minute=2, revenue=20, currency="EUR"),
    )
    await send(alias("v", "u1", minute=3))
    await send(
        track("Clicked", anonymous_id="v", minute=4),
        identify(anonymous_id="v", minute=5, color="red", email="v@example.com"),
        track("Viewed", "u1", minute=6),
    )
    merged = await by(database, tenant, "user_id", "u1")
    assert merged is not None
    assert merged.traits == {
        "plan": "pro",
        "name": "Visitor",
        "color": "red",
        "email": "v@example.com",
    }
    async with database.read_session() as session:
        [record] = await queries.list_merges(session, workspace_id=tenant.id, profile_id=merged.id)
    async with database.write_session() as session:
        undone = await merges.unmerge(
            session,
            workspace_id=tenant.id,
            profile_id=merged.id,
            merge_id=record.id,
            now=datetime.now(UTC),
        )
        await session.commit()
    assert undone.status == "unmerged" and undone.undone_at is not None

    user = await by(database, tenant, "user_id", "u1")
    visitor = await by(database, tenant, "anonymous_id", "v")
    assert user is not None and visitor is not None and user.id != visitor.id
    assert user.traits == {"plan": "pro"}
    assert user.computed["event_counts"] == {"Order Completed": 1, "Viewed": 1}
    assert user.computed["revenue"] == {"EUR": 2000}
    assert visitor.traits == {
        "plan": "free",
        "name": "Visitor",
        "color": "red",
        "email": "v@example.com",
    }
    assert visitor.computed["event_counts"] == {"Viewed": 1, "Clicked": 1}
    emailed = await by(database, tenant, "email", "v@example.com")
    assert emailed is not None and emailed.id == visitor.id

    # The pair is not merged again by the next event linking them; the refusal is recorded.
    await send(identify("u1", "v", minute=7))
    again = await by(database, tenant, "anonymous_id", "v")
    assert again is not None and again.id == visitor.id
    async with database.read_session() as session:
        records = await queries.list_merges(session, workspace_id=tenant.id, profile_id=visitor.id)
    assert [r.status for r in records] == ["unmerged"]

    async with database.write_session() as session:
        with pytest.raises(Conflict):
            await merges.unmerge(
                session,
                workspace_id=tenant.id,
                profile_id=user.id,
                merge_id=record.id,
                now=datetime.now(UTC),
            )
        with pytest.raises(NotFound):
            await merges.unmerge(
                session,
                workspace_id=tenant.id,
                profile_id=user.id,
                merge_id=10**9,
                now=datetime.now(UTC),
            )


async def _undo_only_merge(database: Database, tenant: Tenant, profile: Profile) -> None:
    async with database.read_session() as session:
        [record] = await queries.list_merges(session, workspace_id=tenant.id, profile_id=profile.id)
    async with database.write_session() as session:
        await merges.unmerge(
            session,
            workspace_id=tenant.id,
            profile_id=profile.id,
            merge_id=record.id,
            now=datetime.now(UTC),
        )
        await session.commit()


async def test_unmerge_keeps_writes_that_lost_to_the_merged_side(
    send: Send, database: Database, tenant: Tenant
) -> None:
    """Identifies that changed nothing while merged (older than the merged-in value, or equal
    to it) still count for their own profile once the merge is undone."""
    await send(identify("u1", minute=1, plan="a"), identify("u1", minute=6, color="red"))
    await send(identify(anonymous_id="v", minute=3, plan="b", tier="gold"))
    await send(alias("v", "u1", minute=7))
    await send(
        identify("u1", minute=2, plan="c"),  # older than v's plan: loses while merged
        identify("u1", minute=8, tier="gold"),  # v's value again: no change while merged
        identify(anonymous_id="v", minute=5, color="blue"),  # older than u1's color
    )
    merged = await by(database, tenant, "user_id", "u1")
    assert merged is not None
    assert merged.traits == {"plan": "b", "color": "red", "tier": "gold"}

    await _undo_only_merge(database, tenant, merged)
    user = await by(database, tenant, "user_id", "u1")
    visitor = await by(database, tenant, "anonymous_id", "v")
    assert user is not None and visitor is not None and user.id != visitor.id
    assert user.traits == {"plan": "c", "color": "red", "tier": "gold"}
    assert visitor.traits == {"plan": "b", "tier": "gold", "color": "blue"}
