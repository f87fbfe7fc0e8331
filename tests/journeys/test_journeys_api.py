"""The journeys API: drafts saved as drawn, validation, publishing versions (every fault
named under its node id, nothing saved), and the states."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Tenant, problem
from tests.journeys.test_compiler import abandoned_cart, node


async def _template(client: httpx.AsyncClient, tenant: Tenant, name: str, channel: str) -> int:
    content = (
        {"subject": "Your cart", "html": "<p>Still thinking?</p>"}
        if channel == "email"
        else {"body": "Your cart misses you"}
    )
    made = await client.post(
        "/api/v1/templates",
        json={"name": name, "channel": channel, "content": content},
        headers=tenant.admin,
    )
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


async def _graph(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """The compiler tests' abandoned cart, naming this workspace's templates and segment."""
    email = await _template(client, tenant, "Cart 1", "email")
    sms = await _template(client, tenant, "Cart 2", "sms")
    segment = await client.post(
        "/api/v1/segments",
        json={
            "name": "VIP",
            "rule": {"type": "trait", "trait": "vip", "operator": "eq", "value": True},
        },
        headers=tenant.admin,
    )
    assert segment.status_code == 201, segment.text
    graph = abandoned_cart()
    node(graph, "first")["actions"][0]["template_id"] = email
    node(graph, "second")["actions"] = [
        {"kind": "send", "template_id": sms},
        {"kind": "send", "template_id": email},
    ]
    node(graph, "vip")["branches"][1]["when"] = {
        "type": "segment", "segment_id": segment.json()["id"]
    }  # fmt: skip
    return graph


async def test_a_draft_is_saved_as_drawn_and_published_only_when_valid(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.admin
    unfinished = {"nodes": [{"id": "start", "type": "trigger"}]}
    created = await client.post(
        "/api/v1/journeys", json={"name": "Abandoned cart", "graph": unfinished}, headers=admin
    )
    assert created.status_code == 201, created.text
    journey = created.json()
    assert (journey["state"], journey["live_version"], journey["graph"]) == (
        "draft",
        None,
        unfinished,
    )
    url = f"/api/v1/journeys/{journey['id']}"

    checked = await client.post(
        "/api/v1/journeys/validate", json={"graph": unfinished}, headers=admin
    )
    assert checked.json()["valid"] is False and checked.json()["errors"]
    body = problem(await client.post(f"{url}/publish", headers=admin), 400, "nodes.start.next")
    assert body["code"] == "invalid-journey"
    assert (await client.get(f"{url}/versions", headers=admin)).json() == []
    assert (await client.get(url, headers=admin)).json()["state"] == "draft"

    # Every fault of a whole graph at once, each under its node's id.
    graph = await _graph(client, tenant)
    broken = abandoned_cart()
    node(broken, "day")["next"] = "nowhere"
    node(broken, "first")["actions"][0]["template_id"] = 999_999
    await client.patch(url, json={"graph": broken}, headers=admin)
    body = problem(await client.post(f"{url}/publish", headers=admin), 400)
    fields = {error["field"] for error in body["errors"]}
    assert {"nodes.day.next", "nodes.first.actions.0.template_id"} <= fields

    valid = await client.post("/api/v1/journeys/validate", json={"graph": graph}, headers=admin)
    assert valid.json() == {"valid": True, "errors": []}
    await client.patch(url, json={"graph": graph}, headers=admin)
    published = await client.post(f"{url}/publish", headers=admin)
    assert published.status_code == 200, published.text
    version = published.json()
    assert version["number"] == 1 and version["graph"] == graph
    assert version["plan"]["start"] == "start"
    assert version["plan"]["successors"]["hour"] == ["done", "first"]
    read = (await client.get(url, headers=admin)).json()
    assert (read["state"], read["live_version"]) == ("live", 1)

    # A new draft changes nothing that runs until it is published as version 2.
    node(graph, "day")["wait"]["seconds"] = 2 * 86_400
    await client.patch(url, json={"graph": graph}, headers=admin)
    assert (await client.get(url, headers=admin)).json()["live_version"] == 1
    again = await client.post(f"{url}/publish", headers=admin)
    assert again.json()["number"] == 2
    versions = (await client.get(f"{url}/versions", headers=admin)).json()
    assert [v["number"] for v in versions] == [2, 1]
    assert node(versions[1]["graph"], "day")["wait"]["seconds"] == 86_400


async def test_states_pause_resume_archive_and_what_each_refuses(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.admin
    graph = await _graph(client, tenant)
    created = await client.post(
        "/api/v1/journeys", json={"name": "Cart", "graph": graph}, headers=admin
    )
    url = f"/api/v1/journeys/{created.json()['id']}"
    problem(await client.post(f"{url}/pause", headers=admin), 409, "state")  # a draft
    assert (await client.post(f"{url}/publish", headers=admin)).status_code == 200
    paused = await client.post(f"{url}/pause", headers=admin)
    assert paused.json()["state"] == "paused"
    problem(await client.post(f"{url}/publish", headers=admin), 409, "state")
    problem(await client.post(f"{url}/pause", headers=admin), 409, "state")
    assert (await client.post(f"{url}/resume", headers=admin)).json()["state"] == "live"
    assert (await client.post(f"{url}/archive", headers=admin)).json()["state"] == "archived"
    for action in ("publish", "pause", "resume", "archive"):
        problem(await client.post(f"{url}/{action}", headers=admin), 409, "state")
    again = problem(await client.post(f"{url}/archive", headers=admin), 409, "state")
    assert again["detail"].startswith("An archived journey cannot be archived")
    problem(await client.patch(url, json={"description": "x"}, headers=admin), 409, "state")
    listed = await client.get("/api/v1/journeys", params={"state": "archived"}, headers=admin)
    assert [j["name"] for j in listed.json()["items"]] == ["Cart"]


async def test_a_name_is_taken_until_its_journey_is_archived(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.admin
    graph = await _graph(client, tenant)
    body = {"name": "Welcome", "graph": graph}
    first = (await client.post("/api/v1/journeys", json=body, headers=admin)).json()
    problem(await client.post("/api/v1/journeys", json=body, headers=admin), 409, "name")
    other = (
        await client.post("/api/v1/journeys", json=body | {"name": "Other"}, headers=admin)
    ).json()
    renamed = await client.patch(
        f"/api/v1/journeys/{other['id']}", json={"name": "Welcome"}, headers=admin
    )
    problem(renamed, 409, "name")

    await client.post(f"/api/v1/journeys/{first['id']}/archive", headers=admin)
    second = await client.post("/api/v1/journeys", json=body, headers=admin)
    assert second.status_code == 201, second.text
    await client.post(f"/api/v1/journeys/{second.json()['id']}/archive", headers=admin)
    renamed = await client.patch(
        f"/api/v1/journeys/{other['id']}", json={"name": "Welcome"}, headers=admin
    )
    assert renamed.json()["name"] == "Welcome"
    listed = await client.get("/api/v1/journeys", params={"state": "archived"}, headers=admin)
    assert [j["name"] for j in listed.json()["items"]] == ["Welcome", "Welcome"]


async def test_bad_requests_name_their_field_and_save_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.admin
    made = await client.post("/api/v1/journeys", json={"name": "One", "graph": {}}, headers=admin)
    assert made.status_code == 201
    problem(
        await client.post("/api/v1/journeys", json={"name": "One", "graph": {}}, headers=admin),
        409,
        "name",
    )
    problem(
        await client.post("/api/v1/journeys", json={"name": "", "graph": {}}, headers=admin),
        422,
        "name",
    )
    problem(
        await client.post("/api/v1/journeys", json={"name": "Two", "graph": []}, headers=admin),
        422,
        "graph",
    )
    problem(await client.get("/api/v1/journeys/999999", headers=admin), 404)
    problem(await client.post("/api/v1/journeys/999999/publish", headers=admin), 404)
    listed = await client.get("/api/v1/journeys", headers=admin)
    assert [j["name"] for j in listed.json()["items"]] == ["One"]


async def test_a_segment_a_live_journey_uses_cannot_be_deleted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.admin
    graph = await _graph(client, tenant)
    segment_id = node(graph, "vip")["branches"][1]["when"]["segment_id"]
    created = await client.post(
        "/api/v1/journeys", json={"name": "Cart", "graph": graph}, headers=admin
    )
    url = f"/api/v1/journeys/{created.json()['id']}"
    # A draft is checked when it is published: it holds nothing back.
    await client.post(f"{url}/publish", headers=admin)
    for state in ("live", "paused"):
        refused = await client.delete(f"/api/v1/segments/{segment_id}", headers=admin)
        body = problem(refused, 409)
        assert f"journey {created.json()['id']} (Cart)" in body["detail"]
        assert (await client.get(f"/api/v1/segments/{segment_id}", headers=admin)).is_success
        if state == "live":
            assert (await client.post(f"{url}/pause", headers=admin)).is_success
    assert (await client.post(f"{url}/archive", headers=admin)).is_success
    deleted = await client.delete(f"/api/v1/segments/{segment_id}", headers=admin)
    assert deleted.status_code == 204
