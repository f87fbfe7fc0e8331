"""A segment saved naming another while that one is deleted: one of the two always sees
the other. Saving holds the segments its rule names, and a delete locks its row before it
looks for segments naming it. PostgreSQL only: SQLite has one writer at a time."""

from __future__ import annotations

import asyncio

import pytest

from clarion.core.clock import SystemClock
from clarion.segments import service as segments
from tests.campaigns.conftest import Desk
from tests.campaigns.test_in_use_races import blocked
from tests.conftest import problem


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: a save and a delete never overlap")


def _naming(segment_id: int) -> dict[str, object]:
    return {"type": "segment", "segment_id": segment_id}


async def test_a_delete_during_a_save_naming_it_waits_then_is_refused(desk: Desk) -> None:
    pros = await desk.segment()
    async with desk.database.write_session() as session:
        await segments.create_segment(
            session, workspace_id=desk.tenant.id, name="Named", description="",
            raw_rule=_naming(pros), now=SystemClock().now(),
        )  # fmt: skip
        path = f"/api/v1/segments/{pros}"
        deleting = asyncio.create_task(desk.client.delete(path, headers=desk.tenant.admin))
        assert await blocked(desk.database, deleting)  # held by the save until it ends
        await session.commit()
    response = await asyncio.wait_for(deleting, timeout=5)
    assert "refer to this segment" in problem(response, 409)["detail"]
    await desk.get(path)  # still there


async def test_a_save_naming_a_segment_being_deleted_waits_then_is_refused(desk: Desk) -> None:
    pros = await desk.segment()
    other = await desk.segment(name="Other")
    async with desk.database.write_session() as session:
        await segments.delete_segment(session, workspace_id=desk.tenant.id, segment_id=pros)
        saving = asyncio.create_task(
            desk.client.patch(
                f"/api/v1/segments/{other}",
                json={"rule": _naming(pros)},
                headers=desk.tenant.admin,
            )
        )
        assert await blocked(desk.database, saving)  # held by the delete until it ends
        await session.commit()
    response = await asyncio.wait_for(saving, timeout=5)
    body = problem(response, 400)
    assert any("no segment" in error["message"] for error in body["errors"])


async def test_two_saves_closing_a_cycle_at_once_one_waits_then_is_refused(desk: Desk) -> None:
    first = await desk.segment()
    second = await desk.segment(name="Second")
    async with desk.database.write_session() as session:
        await segments.update_segment(
            session, workspace_id=desk.tenant.id, segment_id=first, name=None,
            description=None, raw_rule=_naming(second), now=SystemClock().now(),
        )  # fmt: skip
        saving = asyncio.create_task(
            desk.client.patch(
                f"/api/v1/segments/{second}",
                json={"rule": _naming(first)},
                headers=desk.tenant.admin,
            )
        )
        assert await blocked(desk.database, saving)  # waits for the first save to end
        await session.commit()
    response = await asyncio.wait_for(saving, timeout=5)
    body = problem(response, 400)
    assert any("would make a cycle" in error["message"] for error in body["errors"])
    assert (await desk.get(f"/api/v1/segments/{second}"))["rule"] != _naming(first)
