"""`audience.forget_profiles` reads only the workspace's list audiences naming an erased
person (by a profile id or a user id of theirs) and takes them out of those alone."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import or_, select

from clarion.campaigns import audience
from clarion.campaigns.models import Campaign
from tests.campaigns.conftest import Desk
from tests.conftest import Tenant


async def other_campaign(client: httpx.AsyncClient, tenant: Tenant, user_ids: list[str]) -> int:
    """A list campaign of another workspace."""
    body = {"name": "News", "channel": "email", "content": {"subject": "Hi", "html": "<p>Hi</p>"}}
    template = await client.post("/api/v1/templates", json=body, headers=tenant.admin)
    assert template.status_code == 201, template.text
    campaign = {
        "name": "Elsewhere",
        "template_id": template.json()["id"],
        "audience": {"type": "list", "user_ids": user_ids},
    }
    created = await client.post("/api/v1/campaigns", json=campaign, headers=tenant.admin)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def test_only_lists_naming_the_person_are_read_and_changed(
    desk: Desk, other_tenant: Tenant
) -> None:
    ann = await desk.identify("ann", plan="pro")
    bo = await desk.identify("bo", plan="pro")
    template = await desk.template()
    segment = await desk.segment()

    async def made(audience_: dict[str, Any]) -> int:
        return int((await desk.campaign(audience=audience_, template_id=template))["id"])

    pros = await made({"type": "segment", "segment_id": segment})
    others = await made({"type": "list", "user_ids": ["bo", "ANN", "ann "], "profile_ids": [bo]})
    by_profile = await made({"type": "list", "profile_ids": [bo, ann]})
    by_user = await made({"type": "list", "user_ids": ["ann"]})
    both = await made({"type": "list", "user_ids": ["ann", "bo"], "profile_ids": [ann, ann]})
    elsewhere = await other_campaign(desk.client, other_tenant, ["ann"])
    before = {c: (await desk.read(c))["audience"] for c in (pros, others)}

    async with desk.database.write_session() as session:
        naming = await session.scalars(
            select(Campaign.id)
            .where(
                Campaign.workspace_id == desk.tenant.id,
                or_(
                    audience._names_any("profile_ids", {ann}, postgres=_postgres(session)),
                    audience._names_any("user_ids", {"ann"}, postgres=_postgres(session)),
                ),
            )
            .order_by(Campaign.id)
        )
        assert naming.all() == [by_profile, by_user, both]
        removed = await audience.forget_profiles(session, desk.tenant.id, [uuid.UUID(ann)])
        await session.commit()
    assert removed == {"campaign_list_entries": 5}

    assert {c: (await desk.read(c))["audience"] for c in (pros, others)} == before
    assert (await desk.read(by_profile))["audience"]["profile_ids"] == [bo]
    assert (await desk.read(by_user))["audience"]["user_ids"] == []
    assert (await desk.read(both))["audience"] == {
        "type": "list", "user_ids": ["bo"], "profile_ids": [],
    }  # fmt: skip
    elsewhere_now = await desk.client.get(
        f"/api/v1/campaigns/{elsewhere}", headers=other_tenant.admin
    )
    assert elsewhere_now.json()["audience"]["user_ids"] == ["ann"]

    async with desk.database.write_session() as session:  # again: nothing names Ann now
        assert await audience.forget_profiles(session, desk.tenant.id, [uuid.UUID(ann)]) == {}
        assert await audience.forget_profiles(session, desk.tenant.id, []) == {}


def _postgres(session: Any) -> bool:
    return bool(session.get_bind().dialect.name == "postgresql")
