"""Erasing profiles from segments (`membership.erase_profiles`, a person's erasure): their
memberships and history go, the counters drop with them, nothing is announced, and everyone
else's memberships stay; their kept state goes with the profile row (its foreign key
cascades, on both databases)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from clarion.core.database import Database
from clarion.ingest.models import Event
from clarion.profiles import erasure
from clarion.profiles import service as profiles
from clarion.segments import service
from clarion.segments.catalog import Catalog
from clarion.segments.membership import Changes, apply_changes, erase_profiles
from clarion.segments.models import ProfileSegmentState, Segment, SegmentChange, SegmentMember
from tests.conftest import Tenant


async def test_erased_profiles_leave_their_segments_without_a_trace(
    database: Database, tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    async with database.write_session() as session:
        ada, bob = [
            (
                await profiles.upsert_profile(
                    session, workspace_id=tenant.id, now=now, user_id=user_id, traits={}
                )
            ).id
            for user_id in ("ada", "bob")
        ]
        segments = [
            (
                await service.create_segment(
                    session,
                    workspace_id=tenant.id,
                    name=name,
                    description="",
                    raw_rule={"type": "trait", "trait": "plan", "operator": "exists"},
                    now=now,
                )
            )[0].id
            for name in ("One", "Two")
        ]
        index = await Catalog().load(session, tenant.id)
        await apply_changes(
            session,
            workspace_id=tenant.id,
            index=index,
            changes=Changes(entered=[(s, p) for s in segments for p in (ada, bob)]),
            now=now,
            cause="realtime",
            emit=False,
        )
        await apply_changes(
            session,
            workspace_id=tenant.id,
            index=index,
            changes=Changes(exited=[(segments[1], ada)]),
            now=now,
            cause="realtime",
            emit=False,
        )
        session.add_all(
            ProfileSegmentState(
                profile_id=p,
                workspace_id=tenant.id,
                aggregates={},
                specs_version="",
                updated_at=now,
            )
            for p in (ada, bob)
        )
        await session.commit()
    async with database.read_session() as session:
        events_before = await session.scalar(
            select(func.count()).where(Event.workspace_id == tenant.id)
        )

    async with database.write_session() as session:
        removed = await erase_profiles(session, tenant.id, [ada])
        assert await erase_profiles(session, tenant.id, []) == {}
        await session.commit()
    # Ada was in One, and entered Two and left it: 3 history rows.
    assert removed == {"segment_memberships": 1, "segment_changes": 3}

    async with database.read_session() as session:
        left = await session.execute(
            select(SegmentMember.segment_id, SegmentMember.profile_id)
            .where(SegmentMember.workspace_id == tenant.id)
            .order_by(SegmentMember.segment_id)
        )
        assert [tuple(row) for row in left] == [(segments[0], bob), (segments[1], bob)]
        counts = await session.execute(
            select(Segment.id, Segment.member_count)
            .where(Segment.id.in_(segments))
            .order_by(Segment.id)
        )
        assert [tuple(row) for row in counts] == [(segments[0], 1), (segments[1], 1)]
        history = await session.scalars(
            select(SegmentChange.profile_id).where(SegmentChange.workspace_id == tenant.id)
        )
        assert set(history.all()) == {bob}
        # No Segment Exited: nobody is left for a journey to act on.
        events_after = await session.scalar(
            select(func.count()).where(Event.workspace_id == tenant.id)
        )
        assert events_after == events_before

    async with database.write_session() as session:  # again: nothing left, nothing moves
        assert await erase_profiles(session, tenant.id, [ada]) == {
            "segment_memberships": 0,
            "segment_changes": 0,
        }
        await session.commit()
    async with database.read_session() as session:
        counts = await session.scalars(select(Segment.member_count).where(Segment.id.in_(segments)))
        assert list(counts.all()) == [1, 1]

    # Kept state is left to the profile row's cascade, which the erasure's delete runs.
    assert await states(database, tenant.id) == {ada, bob}
    async with database.write_session() as session:
        await erasure.delete_profile(session, workspace_id=tenant.id, profile_id=ada)
        await session.commit()
    assert await states(database, tenant.id) == {bob}


async def states(database: Database, workspace_id: int) -> set[uuid.UUID]:
    """The profiles of the workspace with kept segment state."""
    async with database.read_session() as session:
        found = await session.scalars(
            select(ProfileSegmentState.profile_id).where(
                ProfileSegmentState.workspace_id == workspace_id
            )
        )
        return set(found.all())
