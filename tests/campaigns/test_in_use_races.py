"""A campaign sent (or edited while scheduled) while what it names is deleted: one of the
two always sees the other.

Sending holds the campaign's segment, template and channel until it commits, and a delete
(archive) locks its row before it looks for users: a delete started during a send waits,
then is refused naming the campaign; a send started during a delete waits, then is
refused naming what is gone. PostgreSQL only: SQLite has one writer at a time, so the two
never overlap there.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns import lifecycle
from clarion.campaigns.schemas import SendRequest
from clarion.core.database import Database
from clarion.messaging import channel_config
from clarion.messaging import templates as message_templates
from clarion.segments import service as segments
from tests.campaigns.conftest import Desk
from tests.conftest import problem

# The longest a statement is given to start waiting for a lock.
WAIT = 5.0

# What the campaign names, by its URL's collection: the field a refused send names.
NAMED = {
    "segments": "audience.segment_id",
    "templates": "template_id",
    "channels": "channel_id",
}


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: a send and a delete never overlap")


async def _things(desk: Desk) -> dict[str, int]:
    """A segment with a member, a template and a named channel (not the default), by
    collection."""
    await desk.identify("ada", email="ada@example.com", plan="pro")
    await desk.channel()  # the default: the named one can go
    return {
        "segments": await desk.segment(),
        "templates": await desk.template(),
        "channels": await desk.channel(name="Named"),
    }


async def _draft(desk: Desk, named: dict[str, int]) -> dict[str, Any]:
    return await desk.campaign(
        audience={"type": "segment", "segment_id": named["segments"]},
        template_id=named["templates"],
        channel_id=named["channels"],
    )


def _later(desk: Desk) -> dict[str, str]:
    return {"when": "at", "at": (desk.clock.now() + timedelta(hours=1)).isoformat()}


async def blocked(database: Database, task: asyncio.Task[Any]) -> bool:
    """Whether `task` waits for a lock: it is not done, and a statement of this database
    waits for a lock (PostgreSQL's own word), rather than having finished without one."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not task.done() and asyncio.get_running_loop().time() < deadline:
        async with database.read_session() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return not task.done()
        await asyncio.sleep(0.02)
    return False


async def delete_in(
    app: FastAPI, desk: Desk, session: AsyncSession, collection: str, thing_id: int
) -> None:
    """What DELETE /api/v1/<collection>/<id> does, in `session`, left uncommitted."""
    workspace_id, now = desk.tenant.id, desk.clock.now()
    if collection == "segments":
        await segments.delete_segment(
            session, workspace_id=workspace_id, segment_id=thing_id,
            users=app.state.segment_users,
        )  # fmt: skip
    elif collection == "templates":
        await message_templates.archive_template(
            session, workspace_id=workspace_id, template_id=thing_id, now=now,
            users=app.state.template_users,
        )  # fmt: skip
    else:
        await channel_config.delete_channel(
            session, workspace_id=workspace_id, channel_id=thing_id, now=now,
            users=app.state.channel_users,
        )  # fmt: skip


@pytest.mark.parametrize("collection", list(NAMED))
async def test_a_delete_during_a_send_waits_then_is_refused_naming_the_campaign(
    desk: Desk, collection: str
) -> None:
    named = await _things(desk)
    campaign = await _draft(desk, named)
    path = f"/api/v1/{collection}/{named[collection]}"
    async with desk.database.write_session() as session:
        await lifecycle.send_campaign(
            session, workspace_id=desk.tenant.id, campaign_id=campaign["id"],
            request=SendRequest.model_validate(_later(desk)), now=desk.clock.now(),
        )  # fmt: skip
        deleting = asyncio.create_task(desk.client.delete(path, headers=desk.tenant.admin))
        assert await blocked(desk.database, deleting)  # held by the send until it ends
        await session.commit()
    response = await asyncio.wait_for(deleting, timeout=5)
    thing = collection.removesuffix("s")
    detail = problem(response, 409)["detail"]
    assert detail == f"This {thing} is in use by campaign {campaign['id']} ({campaign['name']})."
    assert (await desk.read(campaign["id"]))["state"] == "scheduled"
    await desk.get(path)  # still there


@pytest.mark.parametrize("collection", list(NAMED))
async def test_a_send_during_a_delete_waits_then_is_refused_naming_what_is_gone(
    app: FastAPI, desk: Desk, collection: str
) -> None:
    named = await _things(desk)
    campaign = await _draft(desk, named)
    url = f"/api/v1/campaigns/{campaign['id']}"
    async with desk.database.write_session() as session:
        await delete_in(app, desk, session, collection, named[collection])
        sending = asyncio.create_task(
            desk.client.post(f"{url}/send", json=_later(desk), headers=desk.tenant.admin)
        )
        assert await blocked(desk.database, sending)  # held by the delete until it ends
        await session.commit()
    problem(await asyncio.wait_for(sending, timeout=5), 409, NAMED[collection])
    assert (await desk.read(campaign["id"]))["state"] == "draft"


async def test_a_scheduled_campaign_edited_onto_a_channel_being_deleted_waits_then_is_refused(
    app: FastAPI, desk: Desk
) -> None:
    named = await _things(desk)
    campaign = await desk.campaign(
        audience={"type": "segment", "segment_id": named["segments"]},
        template_id=named["templates"],
    )  # through the default channel
    url = f"/api/v1/campaigns/{campaign['id']}"
    await desk.post(f"{url}/send", _later(desk))
    async with desk.database.write_session() as session:
        await delete_in(app, desk, session, "channels", named["channels"])
        editing = asyncio.create_task(
            desk.client.patch(
                url, json={"channel_id": named["channels"]}, headers=desk.tenant.admin
            )
        )
        assert await blocked(desk.database, editing)  # held by the delete until it ends
        await session.commit()
    problem(await asyncio.wait_for(editing, timeout=5), 422, "channel_id")
    assert (await desk.read(campaign["id"]))["channel_id"] is None
