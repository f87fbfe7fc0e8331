"""A journey published while what it names is deleted: one of the two always sees the other.

Publishing holds the segments, templates and channels its graph names until it commits, and
a delete (archive) locks its row before it looks for users: a delete started during a
publish waits, then is refused naming the journey; a publish started during a delete
waits, then is refused naming what is gone. PostgreSQL only: SQLite has one writer at a
time, so the two never overlap there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI

from clarion.journeys import service as journeys
from tests.campaigns.conftest import Desk
from tests.campaigns.test_in_use_races import blocked, delete_in
from tests.conftest import problem
from tests.journeys.test_runtime import send_journey

# What the journey names, by its URL's collection: the field a publish refused names.
NAMED = {
    "segments": "nodes.start.trigger.segment_id",
    "templates": "nodes.mail.actions.0.template_id",
    "channels": "nodes.mail.actions.0.channel_id",
}


async def _draft(desk: Desk) -> tuple[int, dict[str, int]]:
    """A draft journey entering a segment's members and mailing them a template through a
    named channel (not the default); its id and theirs, by collection."""
    await desk.identify("ada", email="ada@example.com", plan="pro")
    await desk.channel()  # the default: the named one can go
    named = {
        "segments": await desk.segment(),
        "templates": await desk.template(),
        "channels": await desk.channel(name="Named"),
    }
    graph = send_journey({"kind": "segment_entered", "segment_id": named["segments"]}, 0)
    graph["nodes"][1]["actions"] = [
        {"kind": "send", "template_id": named["templates"], "channel_id": named["channels"]}
    ]
    created = await desk.post("/api/v1/journeys", {"name": "Pros", "graph": graph}, 201)
    return int(created["id"]), named


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: a publish and a delete never overlap")


@pytest.mark.parametrize("collection", list(NAMED))
async def test_a_delete_during_a_publish_waits_then_is_refused_naming_the_journey(
    desk: Desk, collection: str
) -> None:
    journey, named = await _draft(desk)
    path = f"/api/v1/{collection}/{named[collection]}"
    async with desk.database.write_session() as session:
        await journeys.publish_journey(
            session, workspace_id=desk.tenant.id, journey_id=journey, now=desk.clock.now()
        )
        deleting = asyncio.create_task(desk.client.delete(path, headers=desk.tenant.admin))
        assert await blocked(desk.database, deleting)  # held by the publish until it ends
        await session.commit()
    response = await asyncio.wait_for(deleting, timeout=5)
    thing = collection.removesuffix("s")
    detail = problem(response, 409)["detail"]
    assert detail == f"This {thing} is in use by journey {journey} (Pros)."
    assert (await desk.get(f"/api/v1/journeys/{journey}"))["state"] == "live"
    await desk.get(path)  # still there


@pytest.mark.parametrize("collection", list(NAMED))
async def test_a_publish_during_a_delete_waits_then_is_refused_naming_what_is_gone(
    app: FastAPI, desk: Desk, collection: str
) -> None:
    journey, named = await _draft(desk)
    url = f"/api/v1/journeys/{journey}"
    async with desk.database.write_session() as session:
        await delete_in(app, desk, session, collection, named[collection])
        publishing = asyncio.create_task(
            desk.client.post(f"{url}/publish", headers=desk.tenant.admin)
        )
        assert await blocked(desk.database, publishing)  # held by the delete until it ends
        await session.commit()
    response = await asyncio.wait_for(publishing, timeout=5)
    assert problem(response, 400, NAMED[collection])["code"] == "invalid-journey"
    journey_now: dict[str, Any] = await desk.get(url)
    assert (journey_now["state"], journey_now["live_version"]) == ("draft", None)
