"""What writing memberships touches besides the membership rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from clarion.core.database import Database
from clarion.profiles import service as profiles
from clarion.segments import service
from clarion.segments.catalog import Catalog
from clarion.segments.membership import Changes, apply_changes
from tests.conftest import Tenant


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
