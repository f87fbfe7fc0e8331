"""The profiles API: lookups, merged ids, timeline paging, undo, problems naming the field."""

from __future__ import annotations

import httpx

from tests.conftest import Tenant, problem
from tests.profiles.conftest import Send, alias, identify, track


async def test_profiles_api(client: httpx.AsyncClient, send: Send, tenant: Tenant) -> None:
    await send(
        track("Viewed", anonymous_id="v", minute=1),
        track("Viewed", anonymous_id="v", minute=2),
        identify("u1", minute=3, email="A@B.co"),
    )
    visitor = (
        await client.get("/api/v1/profiles", params={"anonymous_id": "v"}, headers=tenant.reader)
    ).json()["items"][0]
    await send(alias("v", "u1", minute=4))
    [user] = (
        await client.get("/api/v1/profiles", params={"email": " a@b.CO"}, headers=tenant.reader)
    ).json()["items"]
    assert user["merged_ids"] == [visitor["id"]]
    assert user["computed"]["event_counts"] == {"Viewed": 2}
    assert {(i["kind"], i["value"]) for i in user["identities"]} == {
        ("user_id", "u1"),
        ("anonymous_id", "v"),
        ("email", "a@b.co"),
    }
    # A merged-away id answers the canonical profile.
    moved = await client.get(f"/api/v1/profiles/{visitor['id']}", headers=tenant.reader)
    assert moved.json()["id"] == user["id"]

    url = f"/api/v1/profiles/{user['id']}/events"
    first = (await client.get(url, params={"limit": 2}, headers=tenant.reader)).json()
    rest = (
        await client.get(url, params={"cursor": first["next_cursor"]}, headers=tenant.reader)
    ).json()
    assert [e["type"] for e in first["items"] + rest["items"]] == [
        "alias",
        "identify",
        "track",
        "track",
    ]
    assert rest["next_cursor"] is None

    [merge] = (
        await client.get(f"/api/v1/profiles/{user['id']}/merges", headers=tenant.reader)
    ).json()["items"]
    undo = f"/api/v1/profiles/{user['id']}/merges/{merge['id']}/undo"
    problem(await client.post(undo, headers=tenant.reader), 403)
    undone = await client.post(undo, headers=tenant.admin)
    assert undone.status_code == 200 and undone.json()["status"] == "unmerged"
    problem(await client.post(undo, headers=tenant.admin), 409)
    back = (await client.get(f"/api/v1/profiles/{visitor['id']}", headers=tenant.reader)).json()
    assert back["id"] == visitor["id"] and back["computed"]["event_counts"] == {"Viewed": 2}

    history = await client.get(
        f"/api/v1/profiles/{user['id']}/traits/history", headers=tenant.reader
    )
    assert [(c["key"], c["new"]) for c in history.json()["items"]] == [("email", "A@B.co")]


async def test_bad_queries_are_problems(client: httpx.AsyncClient, tenant: Tenant) -> None:
    problem(
        await client.get("/api/v1/profiles", params={"email": "nope"}, headers=tenant.admin),
        400,
        "email",
    )
    problem(
        await client.get("/api/v1/profiles", params={"cursor": "zzz"}, headers=tenant.admin),
        400,
        "cursor",
    )
    problem(await client.get("/api/v1/profiles", params={"limit": 0}, headers=tenant.admin), 422)
    problem(await client.get("/api/v1/profiles/not-a-uuid", headers=tenant.admin), 422)
    missing = "00000000-0000-0000-0000-000000000000"
    problem(await client.get(f"/api/v1/profiles/{missing}", headers=tenant.admin), 404)
    problem(await client.get("/api/v1/profiles"), 401)
