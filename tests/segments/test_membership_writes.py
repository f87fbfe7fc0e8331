"""What writing memberships touches besides the membership rows, and what holds them to
their segment (no foreign key does: migration 0020)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import Database
from clarion.ingest.models import Event
from clarion.profiles import service as profiles
from clarion.segments import service
from clarion.segments.catalog import Catalog, SegmentIndex
from clarion.segments.membership import Changes, MemberCounts, apply_changes
from clarion.segments.models import Segment, SegmentChange, SegmentMember
from tests.campaigns.test_in_use_races import blocked
from tests.conftest import Tenant

EVERYONE = {"type": "trait", "trait": "plan", "operator": "exists"}


async def _ada_and_segment(database: Database, tenant: Tenant) -> tuple[uuid.UUID, int]:
    """A profile and a segment, committed."""
    now = datetime.now(UTC)
    async with database.write_session() as session:
        profile = await profiles.upsert_profile(
            session, workspace_id=tenant.id, now=now, user_id="ada", traits={}
        )
        segment, _ = await service.create_segment(
            session,
            workspace_id=tenant.id,
            name="Everyone",
            description="",
            raw_rule=EVERYONE,
            now=now,
        )
        await session.commit()
        return profile.id, segment.id


async def _write_entry(
    session: AsyncSession,
    tenant: Tenant,
    index: SegmentIndex,
    segment_id: int,
    profile_id: uuid.UUID,
    *,
    emit: bool = True,
    counts: MemberCounts | None = None,
) -> Changes:
    """The profile's entry into the segment (membership, history, event unless not
    `emit`, count now or into `counts`), written in `session` and left uncommitted; what
    was written."""
    return await apply_changes(
        session,
        workspace_id=tenant.id,
        index=index,
        changes=Changes(entered=[(segment_id, profile_id)]),
        now=datetime.now(UTC),
        cause="realtime",
        emit=emit,
        counts=counts,
    )


async def _enter(
    database: Database, tenant: Tenant, segment_id: int, profile_id: uuid.UUID
) -> None:
    """Record the profile's entry into the segment, committed."""
    async with database.write_session() as session:
        index = await Catalog().load(session, tenant.id)
        await _write_entry(session, tenant, index, segment_id, profile_id)
        await session.commit()


async def _rows(database: Database, segment_id: int) -> tuple[int, int]:
    """The segment's membership rows and history rows."""
    async with database.read_session() as session:
        members = await session.scalar(
            select(func.count()).where(SegmentMember.segment_id == segment_id)
        )
        history = await session.scalar(
            select(func.count()).where(SegmentChange.segment_id == segment_id)
        )
    return members or 0, history or 0


async def test_deleting_a_segment_deletes_its_members_and_history(
    database: Database, tenant: Tenant
) -> None:
    profile_id, segment_id = await _ada_and_segment(database, tenant)
    await _enter(database, tenant, segment_id, profile_id)
    assert await _rows(database, segment_id) == (1, 1)
    async with database.write_session() as session:
        await service.delete_segment(session, workspace_id=tenant.id, segment_id=segment_id)
        await session.commit()
    assert await _rows(database, segment_id) == (0, 0)


async def test_a_segment_deleted_after_the_index_was_read_gets_no_entries(
    database: Database, tenant: Tenant
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has one writer at a time: nothing is deleted between the two")
    profile_id, segment_id = await _ada_and_segment(database, tenant)
    async with database.write_session() as writer:
        index = await Catalog().load(writer, tenant.id)  # the segment still in it
        async with database.write_session() as deleter:
            await service.delete_segment(deleter, workspace_id=tenant.id, segment_id=segment_id)
            await deleter.commit()
        written = await _write_entry(writer, tenant, index, segment_id, profile_id)
        await writer.commit()
    assert written.entered == []
    assert await _rows(database, segment_id) == (0, 0)
    async with database.read_session() as session:
        announced = select(func.count()).where(Event.workspace_id == tenant.id)
        assert await session.scalar(announced) == 0


async def test_a_delete_waits_for_a_writer_of_the_segment_then_deletes_what_it_wrote(
    database: Database, tenant: Tenant
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has one writer at a time: a delete and a write never overlap")
    profile_id, segment_id = await _ada_and_segment(database, tenant)

    async def delete() -> None:
        async with database.write_session() as session:
            await service.delete_segment(session, workspace_id=tenant.id, segment_id=segment_id)
            await session.commit()

    async with database.write_session() as writer:
        index = await Catalog().load(writer, tenant.id)
        await _write_entry(writer, tenant, index, segment_id, profile_id, emit=False)
        deleting = asyncio.create_task(delete())
        assert await blocked(database, deleting)  # the writer holds the segment
        await writer.commit()
    await asyncio.wait_for(deleting, timeout=5)
    assert await _rows(database, segment_id) == (0, 0)
    async with database.read_session() as session:
        assert await session.get(Segment, segment_id) is None


async def test_an_entry_leaves_its_profile_row_unlocked(database: Database, tenant: Tenant) -> None:
    """A foreign key to the profile would lock its row (`FOR KEY SHARE`) for every member
    written, dirtying a profile page per member of a baseline (migration 0017)."""
    if database.is_sqlite:
        pytest.skip("SQLite has one writer at a time and no row locks")
    now = datetime.now(UTC)
    async with database.write_session() as session:
        profile = await profiles.upsert_profile(
            session, workspace_id=tenant.id, now=now, user_id="ada", traits={}
        )
        profile_id = profile.id
        segment, _ = await service.create_segment(
            session,
            workspace_id=tenant.id,
            name="Everyone",
            description="",
            raw_rule={"type": "trait", "trait": "plan", "operator": "exists"},
            now=now,
        )
        await session.commit()
    async with database.write_session() as writer:
        index = await Catalog().load(writer, tenant.id)
        written = await apply_changes(
            writer,
            workspace_id=tenant.id,
            index=index,
            changes=Changes(entered=[(segment.id, profile_id)]),
            now=now,
            cause="recompute",
            emit=False,
        )
        assert written.entered == [(segment.id, profile_id)]
        async with database.write_session() as other:  # while the entry is uncommitted
            locked = await other.execute(
                text("SELECT id FROM profiles WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": profile_id},
            )
            assert locked.scalar_one() == profile_id
            await other.rollback()
        await writer.rollback()


async def test_deferred_member_counts_lock_no_counter_until_written(
    database: Database, tenant: Tenant
) -> None:
    """A run that collects its count changes (`MemberCounts`) leaves the segment's counter
    free for concurrent runs until it writes them, just before it commits; then they are
    all there."""
    if database.is_sqlite:
        pytest.skip("SQLite has one writer at a time and no row locks")
    profile_id, segment_id = await _ada_and_segment(database, tenant)
    counts = MemberCounts()
    async with database.write_session() as writer:
        index = await Catalog().load(writer, tenant.id)
        written = await _write_entry(writer, tenant, index, segment_id, profile_id, counts=counts)
        assert written.entered == [(segment_id, profile_id)]
        async with database.write_session() as other:  # another run, meanwhile
            # The lock a counter's UPDATE takes (the writer holds the row `FOR KEY SHARE`
            # against the segment's deletion, which lets it through).
            locked = await other.execute(
                text("SELECT member_count FROM segments WHERE id = :id FOR NO KEY UPDATE NOWAIT"),
                {"id": segment_id},
            )
            assert locked.scalar_one() == 0
            await other.rollback()
        await counts.write(writer)
        await writer.commit()
    async with database.read_session() as session:
        segment = await session.get(Segment, segment_id)
        assert segment is not None and segment.member_count == 1


def test_member_counts_add_up_entries_and_exits_and_merge() -> None:
    ada, bob = uuid.uuid4(), uuid.uuid4()
    counts, attempt = MemberCounts(), MemberCounts()
    counts.add(Changes(entered=[(1, ada), (1, bob), (2, ada)], exited=[(3, bob)]))
    attempt.add(Changes(exited=[(1, ada), (2, ada)]))
    counts.merge(attempt)
    assert counts._deltas == {1: 1, 2: 0, 3: -1}
    assert attempt._deltas == {}
