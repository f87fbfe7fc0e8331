"""Whom a message or an inbox test send goes to (`messages.get_recipient_id`): the
workspace's canonical profile by id (a merged-away id reaches the profile it was merged
into), else by user id. A single send names one field and is refused naming it (its
profile id is never retried as a user id); an inbox test send's `to` is tried as a
profile id, then as a user id, since a user id may look like a UUID too."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import update

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.messaging.messages import get_recipient_id
from clarion.profiles.models import Profile
from clarion.profiles.service import upsert_profile
from tests.conftest import Tenant, problem
from tests.messaging.shop import Post


async def _person(database: Database, tenant: Tenant, user_id: str) -> uuid.UUID:
    async with database.write_session() as session:
        made = await upsert_profile(
            session, workspace_id=tenant.id, user_id=user_id, email=None, phone=None,
            traits={}, now=SystemClock().now(),
        )  # fmt: skip
        await session.commit()
        return made.id


async def _merge(database: Database, absorbed: uuid.UUID, into: uuid.UUID) -> None:
    """What a merge leaves: the absorbed row pointing at the survivor."""
    async with database.write_session() as session:
        await session.execute(
            update(Profile).where(Profile.id == absorbed).values(canonical_id=into)
        )
        await session.commit()


async def _find(
    database: Database, tenant: Tenant, profile_id: uuid.UUID | None, user_id: str | None
) -> uuid.UUID | None:
    async with database.read_session() as session:
        return await get_recipient_id(
            session, workspace_id=tenant.id, profile_id=profile_id, user_id=user_id
        )


async def test_a_recipient_is_the_canonical_profile_by_id_else_by_user_id(
    database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    ann = await _person(database, tenant, "ann")
    gone = await _person(database, tenant, "ann-old")
    await _merge(database, gone, ann)
    looks_like_an_id = str(uuid.uuid4())
    cy = await _person(database, tenant, looks_like_an_id)
    theirs = await _person(database, other_tenant, "bob")

    assert await _find(database, tenant, ann, None) == ann
    assert await _find(database, tenant, gone, None) == ann
    assert await _find(database, tenant, None, "ann") == ann
    assert await _find(database, tenant, None, "ann-old") == ann
    assert await _find(database, tenant, ann, "nobody") == ann  # the id comes first
    assert await _find(database, tenant, uuid.uuid4(), "ann") == ann
    assert await _find(database, tenant, uuid.UUID(looks_like_an_id), looks_like_an_id) == cy
    assert await _find(database, tenant, uuid.uuid4(), None) is None
    assert await _find(database, tenant, None, "nobody") is None
    assert await _find(database, tenant, None, None) is None
    assert await _find(database, tenant, theirs, "bob") is None


async def test_a_send_is_refused_naming_the_field_it_gave(post: Post) -> None:
    """A profile id no profile has is refused as a profile id, even when it is a user id."""
    user_id = str(uuid.uuid4())
    await post.profile(user_id)
    cases = [
        ({"profile_id": str(uuid.uuid4())}, "profile_id", "no such profile"),
        ({"profile_id": user_id}, "profile_id", "no such profile"),
        ({"user_id": "nobody"}, "user_id", "no profile has this user id"),
    ]
    for recipient, field, reason in cases:
        refused = await post.client.post(
            "/api/v1/messages",
            json={"template_id": post.template_id, **recipient},
            headers=post.tenant.admin,
        )
        body = problem(refused, 422, field)
        assert body["errors"] == [{"field": field, "message": reason}], recipient
        assert body["detail"] == f"The message cannot be sent: {reason}."


async def test_a_send_to_a_merged_away_profile_goes_to_the_one_it_was_merged_into(
    post: Post,
) -> None:
    ann = await post.profile("ann", email="ann@example.org")
    gone = await post.profile("ann-old", email="old@example.org")
    await _merge(post.database, gone, ann)
    for recipient in ({"profile_id": str(gone)}, {"user_id": "ann-old"}):
        sent = await post.client.post(
            "/api/v1/messages",
            json={"template_id": post.template_id, **recipient},
            headers=post.tenant.admin,
        )
        assert sent.status_code == 202, sent.text
        assert sent.json()["profile_id"] == str(ann), recipient


async def test_an_inbox_test_send_finds_a_merged_away_id_and_a_uuid_like_user_id(
    client: httpx.AsyncClient, tenant: Tenant, database: Database
) -> None:
    ann = await _person(database, tenant, "ann")
    gone = await _person(database, tenant, "ann-old")
    await _merge(database, gone, ann)
    looks_like_an_id = str(uuid.uuid4())
    await _person(database, tenant, looks_like_an_id)
    created = await client.post(
        "/api/v1/channels", json={"name": "App", "kind": "inbox"}, headers=tenant.admin
    )
    assert created.status_code == 201, created.text
    url = f"/api/v1/channels/{created.json()['id']}/test"
    for to in (str(gone), looks_like_an_id):
        sent = await client.post(url, json={"to": to}, headers=tenant.admin)
        assert sent.status_code == 200, (to, sent.text)
    refused = await client.post(url, json={"to": str(uuid.uuid4())}, headers=tenant.admin)
    assert problem(refused, 422, "to")["errors"] == [
        {"field": "to", "message": "no profile of this workspace has this id or user id"}
    ]
