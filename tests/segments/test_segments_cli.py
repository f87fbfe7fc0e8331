"""`clarion segments list|recompute`, against both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.segments import service
from clarion.workspaces import service as workspaces
from tests.conftest import run_cli


def create_segment(url: str, rule: dict[str, object]) -> int:
    async def work() -> int:
        database = Database(url)
        try:
            async with database.write_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(
                    session, slug=workspaces.DEFAULT_WORKSPACE_SLUG
                )
                segment, _ = await service.create_segment(
                    session,
                    workspace_id=found.id,
                    name="Adults",
                    description="",
                    raw_rule=rule,
                    now=SystemClock().now(),
                )
                await session.commit()
                return segment.id
        finally:
            await database.dispose()

    return asyncio.run(work())


def test_recompute_then_list(clarion: CliRunner, fresh_database: Database, tmp_path: Path) -> None:
    run_cli(clarion, "migrate")
    people = tmp_path / "people.csv"
    people.write_text("user_id,age:int\nu1,41\nu2,12\nu3,30\n", encoding="utf-8")
    run_cli(clarion, "import", "profiles", str(people))
    segment_id = create_segment(
        fresh_database.url, {"type": "trait", "trait": "age", "operator": "gte", "value": 18}
    )
    listed = run_cli(clarion, "segments", "list").output
    assert f"{segment_id}\tAdults\t0 members\tnever computed" in listed

    output = run_cli(clarion, "segments", "recompute", str(segment_id)).output
    assert f"segment {segment_id}: 2 members (2 entered, 0 exited)" in output
    again = run_cli(clarion, "segments", "recompute").output
    assert f"segment {segment_id}: 2 members (0 entered, 0 exited)" in again
    assert "2 members" in run_cli(clarion, "segments", "list").output

    missing = run_cli(clarion, "segments", "recompute", "999", code=1).output
    assert "No segment 999" in missing
