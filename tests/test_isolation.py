"""One workspace's keys never read or write another's data, on every endpoint there is.

`CHECKS` holds one isolation check per route; `test_every_route_has_an_isolation_check`
fails when a route is added without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.jobs.queue import NewJob, enqueue
from tests.conftest import Tenant, problem

# Routes anyone may call: no workspace data behind them.
PUBLIC = {("GET", "/healthz")}


@dataclass
class Seeded:
    """What workspace A holds, which workspace B must never reach."""

    app: FastAPI
    a: Tenant
    b: Tenant
    event_id: int
    key_id: str
    source_id: str
    job_id: int


@pytest.fixture
async def seeded(
    app: FastAPI,
    client: httpx.AsyncClient,
    database: Database,
    tenant: Tenant,
    other_tenant: Tenant,
) -> Seeded:
    sent = await client.post(
        "/v1/track",
        json={"userId": "a-user", "event": "A only", "messageId": "a-1"},
        auth=tenant.writer,
    )
    assert sent.status_code == 200
    [event] = (await client.get("/api/v1/events", headers=tenant.admin)).json()["items"]
    keys = (await client.get("/api/v1/keys", headers=tenant.admin)).json()["items"]
    async with database.write_session() as session:
        await enqueue(session, [NewJob(tenant.id, "isolation.a-only")], now=SystemClock().now())
        await session.commit()
    listed = await client.get(
        "/api/v1/jobs", params={"kind": "isolation.a-only"}, headers=tenant.admin
    )
    [job] = listed.json()["items"]
    return Seeded(
        app, tenant, other_tenant, event["id"], keys[0]["id"], str(tenant.source_id), job["id"]
    )


Check = Callable[[httpx.AsyncClient, Seeded], Awaitable[None]]
CHECKS: dict[tuple[str, str], Check] = {}


def check(method: str, path: str) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS[(method, path)] = function
        return function

    return register


async def _a_unchanged(client: httpx.AsyncClient, s: Seeded) -> None:
    events = (await client.get("/api/v1/events", headers=s.a.admin)).json()["items"]
    assert [e["message_id"] for e in events] == ["a-1"]
    keys = (await client.get("/api/v1/keys", headers=s.a.admin)).json()["items"]
    assert len(keys) == 3
    assert all(k["revoked_at"] is None for k in keys)
    sources = (await client.get("/api/v1/sources", headers=s.a.admin)).json()["items"]
    assert [x["name"] for x in sources] == ["Website"]


def _tracking_check(kind: str, body: dict[str, Any]) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        # B's write key sends a message reusing A's messageId: it lands in B, A is untouched.
        payload = {"batch": [{"type": "track", **body}]} if kind == "batch" else body
        response = await client.post(f"/v1/{kind}", json=payload, auth=s.b.writer)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 1
        b_events = (await client.get("/api/v1/events", headers=s.b.admin)).json()["items"]
        assert [e["message_id"] for e in b_events] == ["a-1"]
        await _a_unchanged(client, s)

    return run


_BODIES: dict[str, dict[str, Any]] = {
    "identify": {"userId": "a-user"},
    "track": {"userId": "a-user", "event": "E"},
    "page": {"userId": "a-user"},
    "screen": {"userId": "a-user"},
    "group": {"userId": "a-user", "groupId": "g"},
    "alias": {"userId": "a-user", "previousId": "p"},
    "batch": {"userId": "a-user", "event": "E"},
}
for _kind, _body in _BODIES.items():
    CHECKS[("POST", f"/v1/{_kind}")] = _tracking_check(_kind, {**_body, "messageId": "a-1"})


@check("GET", "/api/v1/events")
async def _list_events(client: httpx.AsyncClient, s: Seeded) -> None:
    for query in ({}, {"user_id": "a-user"}, {"name": "A only"}):
        response = await client.get("/api/v1/events", params=query, headers=s.b.admin)
        assert response.json()["items"] == []
    # And B does see its own events, so the emptiness above is not a broken endpoint.
    sent = await client.post("/v1/track", json={"userId": "b", "event": "B only"}, auth=s.b.writer)
    assert sent.status_code == 200
    b_events = (await client.get("/api/v1/events", headers=s.b.admin)).json()["items"]
    assert [e["name"] for e in b_events] == ["B only"]


@check("GET", "/api/v1/events/{event_id}")
async def _read_event(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.get(f"/api/v1/events/{s.event_id}", headers=s.b.admin), 404)


@check("GET", "/api/v1/workspace")
async def _read_workspace(client: httpx.AsyncClient, s: Seeded) -> None:
    assert (await client.get("/api/v1/workspace", headers=s.b.admin)).json()["id"] == s.b.id


@check("GET", "/api/v1/sources")
async def _list_sources(client: httpx.AsyncClient, s: Seeded) -> None:
    sources = (await client.get("/api/v1/sources", headers=s.b.admin)).json()["items"]
    assert s.source_id not in {x["id"] for x in sources}
    assert [x["id"] for x in sources] == [str(s.b.source_id)]


@check("POST", "/api/v1/sources")
async def _create_source(client: httpx.AsyncClient, s: Seeded) -> None:
    response = await client.post("/api/v1/sources", json={"name": "B app"}, headers=s.b.admin)
    assert response.status_code == 201
    await _a_unchanged(client, s)


@check("GET", "/api/v1/sources/{source_id}")
async def _read_source(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.get(f"/api/v1/sources/{s.source_id}", headers=s.b.admin), 404)


@check("GET", "/api/v1/keys")
async def _list_keys(client: httpx.AsyncClient, s: Seeded) -> None:
    keys = (await client.get("/api/v1/keys", headers=s.b.admin)).json()["items"]
    assert s.key_id not in {k["id"] for k in keys}
    assert sorted(k["scope"] for k in keys) == ["admin", "read-only", "write"]  # B's own three


@check("POST", "/api/v1/keys")
async def _create_key(client: httpx.AsyncClient, s: Seeded) -> None:
    body = {"scope": "write", "name": "steal", "source_id": s.source_id}
    problem(await client.post("/api/v1/keys", json=body, headers=s.b.admin), 404)
    await _a_unchanged(client, s)


@check("GET", "/api/v1/keys/{key_id}")
async def _read_key(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.get(f"/api/v1/keys/{s.key_id}", headers=s.b.admin), 404)


@check("DELETE", "/api/v1/keys/{key_id}")
async def _revoke_key(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.delete(f"/api/v1/keys/{s.key_id}", headers=s.b.admin), 404)
    await _a_unchanged(client, s)


# Tracking plans


async def _a_plan(client: httpx.AsyncClient, s: Seeded) -> dict[str, Any]:
    body = {
        "name": "A plan",
        "default": True,
        "source_ids": [s.source_id],
        "events": [{"type": "track", "name": "A only"}],
    }
    response = await client.post("/api/v1/tracking-plans", json=body, headers=s.a.admin)
    assert response.status_code == 201, response.text
    plan: dict[str, Any] = response.json()
    return plan


async def _a_plan_unchanged(client: httpx.AsyncClient, s: Seeded, plan: dict[str, Any]) -> None:
    plans = (await client.get("/api/v1/tracking-plans", headers=s.a.admin)).json()["items"]
    assert plans == [plan]


@check("GET", "/api/v1/tracking-plans")
async def _list_plans(client: httpx.AsyncClient, s: Seeded) -> None:
    await _a_plan(client, s)
    assert (await client.get("/api/v1/tracking-plans", headers=s.b.admin)).json()["items"] == []
    body = {"name": "B plan"}
    assert (await client.post("/api/v1/tracking-plans", json=body, headers=s.b.admin)).is_success
    b_plans = (await client.get("/api/v1/tracking-plans", headers=s.b.admin)).json()["items"]
    assert [p["name"] for p in b_plans] == ["B plan"]


@check("POST", "/api/v1/tracking-plans")
async def _create_plan(client: httpx.AsyncClient, s: Seeded) -> None:
    plan = await _a_plan(client, s)
    body = {"name": "steal", "source_ids": [s.source_id]}
    response = await client.post("/api/v1/tracking-plans", json=body, headers=s.b.admin)
    problem(response, 404, "source_ids.0")
    same_name = {"name": "A plan", "default": True}  # names are per workspace
    response = await client.post("/api/v1/tracking-plans", json=same_name, headers=s.b.admin)
    assert response.status_code == 201
    await _a_plan_unchanged(client, s, plan)


@check("GET", "/api/v1/tracking-plans/{plan_id}")
async def _read_plan(client: httpx.AsyncClient, s: Seeded) -> None:
    plan = await _a_plan(client, s)
    problem(await client.get(f"/api/v1/tracking-plans/{plan['id']}", headers=s.b.admin), 404)


@check("PUT", "/api/v1/tracking-plans/{plan_id}")
async def _update_plan(client: httpx.AsyncClient, s: Seeded) -> None:
    plan = await _a_plan(client, s)
    body = {"name": "taken over", "unplanned_events": "block"}
    url = f"/api/v1/tracking-plans/{plan['id']}"
    problem(await client.put(url, json=body, headers=s.b.admin), 404)
    await _a_plan_unchanged(client, s, plan)


@check("DELETE", "/api/v1/tracking-plans/{plan_id}")
async def _delete_plan(client: httpx.AsyncClient, s: Seeded) -> None:
    plan = await _a_plan(client, s)
    problem(await client.delete(f"/api/v1/tracking-plans/{plan['id']}", headers=s.b.admin), 404)
    await _a_plan_unchanged(client, s, plan)


@check("GET", "/api/v1/tracking-plans/violations")
async def _list_violations(client: httpx.AsyncClient, s: Seeded) -> None:
    from clarion.core.clock import SystemClock
    from clarion.ingest.plans import TrackingPlans
    from tests.ingest.plans.support import event

    app = s.app
    plans = TrackingPlans(app.state.database, app.state.settings, SystemClock())
    try:
        for tenant, name in ((s.a, "A unplanned"), (s.b, "B unplanned")):
            await client.post(
                "/api/v1/tracking-plans", json={"name": "P", "default": True}, headers=tenant.admin
            )
            review = await plans.review(tenant.id, [event(tenant, 1, name=name)])
            async with app.state.database.write_session() as session:
                await plans.record(session, review)
                await session.commit()
    finally:
        await plans.close()
    url = "/api/v1/tracking-plans/violations"
    for query, seen in (({}, ["B unplanned"]), ({"event": "A unplanned"}, [])):
        items = (await client.get(url, params=query, headers=s.b.admin)).json()["items"]
        assert [v["event_name"] for v in items] == seen
    a_items = (await client.get(url, headers=s.a.admin)).json()["items"]
    assert [v["event_name"] for v in a_items] == ["A unplanned"]


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    # From the OpenAPI document: FastAPI keeps included routers' routes out of `app.routes`.
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    found = {(method.upper(), path) for path, item in paths.items() for method in item}
    for route in app.routes:  # and routes hidden from the document, added to the app itself
        if isinstance(route, APIRoute):
            found |= {(method, route.path) for method in route.methods}
    return found


def test_every_route_has_an_isolation_check(app: FastAPI) -> None:
    missing = _routes(app) - set(CHECKS) - PUBLIC
    assert not missing, f"add an isolation check for {sorted(missing)}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # At collection, once the whole module (and every check in it) is registered.
    if metafunc.function.__name__ == "test_workspace_b_cannot_reach_workspace_a":
        routes = sorted(CHECKS)
        metafunc.parametrize("route", routes, ids=[f"{m} {p}" for m, p in routes])


async def test_workspace_b_cannot_reach_workspace_a(
    client: httpx.AsyncClient, seeded: Seeded, route: tuple[str, str]
) -> None:
    await CHECKS[route](client, seeded)


async def _a_job_unchanged(client: httpx.AsyncClient, s: Seeded) -> None:
    job = (await client.get(f"/api/v1/jobs/{s.job_id}", headers=s.a.admin)).json()
    assert (job["state"], job["kind"]) == ("ready", "isolation.a-only")


@check("GET", "/api/v1/jobs")
async def _list_jobs(client: httpx.AsyncClient, s: Seeded) -> None:
    assert (await client.get("/api/v1/jobs", headers=s.b.admin)).json()["items"] == []
    mine = await client.get("/api/v1/jobs", params={"kind": "isolation.a-only"}, headers=s.a.admin)
    assert [job["id"] for job in mine.json()["items"]] == [s.job_id]


@check("GET", "/api/v1/jobs/{job_id}")
async def _read_job(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.get(f"/api/v1/jobs/{s.job_id}", headers=s.b.admin), 404)


@check("POST", "/api/v1/jobs/{job_id}/retry")
async def _retry_job(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.post(f"/api/v1/jobs/{s.job_id}/retry", headers=s.b.admin), 404)
    await _a_job_unchanged(client, s)


@check("DELETE", "/api/v1/jobs/{job_id}")
async def _discard_job(client: httpx.AsyncClient, s: Seeded) -> None:
    problem(await client.delete(f"/api/v1/jobs/{s.job_id}", headers=s.b.admin), 404)
    await _a_job_unchanged(client, s)


async def _a_profile(client: httpx.AsyncClient, s: Seeded, tenant: Tenant | None = None) -> str:
    """Apply the tenant's events to profiles (as the pipeline would); A's profile id."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from clarion.ingest.models import Event
    from clarion.ingest.records import EventRecord
    from clarion.profiles.service import apply_events

    owner = tenant or s.a
    database: Database = s.app.state.database
    async with database.write_session() as session:
        rows = (await session.scalars(select(Event).where(Event.workspace_id == owner.id))).all()
        records = [EventRecord.from_row(row) for row in rows]
        await apply_events(session, workspace_id=owner.id, events=records, now=datetime.now(UTC))
        await session.commit()
    [profile] = (await client.get("/api/v1/profiles", headers=owner.admin)).json()["items"]
    return str(profile["id"])


@check("GET", "/api/v1/profiles")
async def _list_profiles(client: httpx.AsyncClient, s: Seeded) -> None:
    await _a_profile(client, s)
    for query in ({}, {"user_id": "a-user"}):
        response = await client.get("/api/v1/profiles", params=query, headers=s.b.admin)
        assert response.json()["items"] == []
    sent = await client.post("/v1/track", json={"userId": "b", "event": "B"}, auth=s.b.writer)
    assert sent.status_code == 200
    await _a_profile(client, s, s.b)
    mine = await client.get("/api/v1/profiles", params={"user_id": "b"}, headers=s.b.admin)
    assert [i["value"] for i in mine.json()["items"][0]["identities"]] == ["b"]


@check("GET", "/api/v1/profiles/{profile_id}")
async def _read_profile(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    problem(await client.get(f"/api/v1/profiles/{profile_id}", headers=s.b.admin), 404)


@check("GET", "/api/v1/profiles/{profile_id}/events")
async def _profile_events(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    problem(await client.get(f"/api/v1/profiles/{profile_id}/events", headers=s.b.admin), 404)


@check("GET", "/api/v1/profiles/{profile_id}/merges")
async def _profile_merges(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    problem(await client.get(f"/api/v1/profiles/{profile_id}/merges", headers=s.b.admin), 404)


@check("POST", "/api/v1/profiles/{profile_id}/merges/{merge_id}/undo")
async def _undo_merge(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    url = f"/api/v1/profiles/{profile_id}/merges/1/undo"
    problem(await client.post(url, headers=s.b.admin), 404)
    assert (
        await client.get(f"/api/v1/profiles/{profile_id}", headers=s.a.admin)
    ).status_code == 200


@check("GET", "/api/v1/profiles/{profile_id}/traits/history")
async def _trait_history(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    url = f"/api/v1/profiles/{profile_id}/traits/history"
    problem(await client.get(url, headers=s.b.admin), 404)


@check("POST", "/api/v1/profiles/imports")
async def _import_profiles(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    before = (await client.get(f"/api/v1/profiles/{profile_id}", headers=s.a.admin)).json()
    # B imports A's user id: it makes B a profile of its own and never touches A's.
    body = b"user_id,email,plan\na-user,a@example.com,taken\n"
    headers = {**s.b.admin, "Content-Type": "text/csv"}
    response = await client.post("/api/v1/profiles/imports", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert (response.json()["created"], response.json()["updated"]) == (1, 0)
    after = (await client.get(f"/api/v1/profiles/{profile_id}", headers=s.a.admin)).json()
    assert after == before
    [mine] = (
        await client.get("/api/v1/profiles", params={"user_id": "a-user"}, headers=s.b.admin)
    ).json()["items"]
    assert mine["id"] != profile_id and mine["traits"]["plan"] == "taken"


@check("GET", "/api/v1/profiles/export")
async def _export_profiles(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    headers = {**s.b.admin, "Content-Type": "text/csv"}
    body = b"user_id,plan\nb-user,b-plan\n"
    assert (await client.post("/api/v1/profiles/imports", content=body, headers=headers)).is_success
    for format in ("csv", "jsonl"):
        response = await client.get(
            "/api/v1/profiles/export", params={"format": format}, headers=s.b.reader
        )
        assert response.status_code == 200
        assert "b-user" in response.text and "b-plan" in response.text
        assert profile_id not in response.text and "a-user" not in response.text


# Segments


async def _a_segment(client: httpx.AsyncClient, s: Seeded) -> tuple[dict[str, Any], str]:
    """A segment of A's with A's profile in it (recomputed now); it and the profile id."""
    profile_id = await _a_profile(client, s)
    body = {"name": "A buyers", "rule": {"type": "event", "event": "A only", "count": 1}}
    created = await client.post("/api/v1/segments", json=body, headers=s.a.admin)
    assert created.status_code == 201, created.text
    segment: dict[str, Any] = created.json()
    url = f"/api/v1/segments/{segment['id']}/recompute"
    assert (await client.post(url, headers=s.a.admin)).json()["size"] == 1
    return segment, profile_id


async def _a_segment_unchanged(
    client: httpx.AsyncClient, s: Seeded, segment: dict[str, Any], profile_id: str
) -> None:
    read = await client.get(f"/api/v1/segments/{segment['id']}", headers=s.a.admin)
    assert read.status_code == 200
    assert (read.json()["name"], read.json()["rule"]) == (segment["name"], segment["rule"])
    members = await client.get(f"/api/v1/segments/{segment['id']}/members", headers=s.a.admin)
    assert [m["profile_id"] for m in members.json()["items"]] == [profile_id]


def _segment_route_check(method: str, suffix: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        segment, profile_id = await _a_segment(client, s)
        url = f"/api/v1/segments/{segment['id']}{suffix}"
        params = {"profile_id": profile_id} if suffix == "/explain" else None
        body = {"name": "taken"} if method == "PATCH" else None
        response = await client.request(method, url, params=params, json=body, headers=s.b.admin)
        problem(response, 404)
        await _a_segment_unchanged(client, s, segment, profile_id)

    return run


for _method, _suffix in [
    ("GET", ""),
    ("PATCH", ""),
    ("DELETE", ""),
    ("GET", "/changes"),
    ("GET", "/explain"),
    ("GET", "/members"),
    ("GET", "/members.csv"),
    ("GET", "/sizes"),
    ("POST", "/recompute"),
]:
    CHECKS[(_method, f"/api/v1/segments/{{segment_id}}{_suffix}")] = _segment_route_check(
        _method, _suffix
    )


@check("GET", "/api/v1/segments")
async def _list_segments(client: httpx.AsyncClient, s: Seeded) -> None:
    segment, profile_id = await _a_segment(client, s)
    assert (await client.get("/api/v1/segments", headers=s.b.admin)).json()["items"] == []
    await _a_segment_unchanged(client, s, segment, profile_id)


@check("POST", "/api/v1/segments")
async def _create_segment(client: httpx.AsyncClient, s: Seeded) -> None:
    segment, profile_id = await _a_segment(client, s)
    steal = {"name": "steal", "rule": {"type": "segment", "segment_id": segment["id"]}}
    problem(await client.post("/api/v1/segments", json=steal, headers=s.b.admin), 400)
    same_name = {"name": "A buyers", "rule": {"type": "event", "event": "A only"}}
    created = await client.post("/api/v1/segments", json=same_name, headers=s.b.admin)
    assert created.status_code == 201  # names are per workspace
    recomputed = await client.post(
        f"/api/v1/segments/{created.json()['id']}/recompute", headers=s.b.admin
    )
    assert recomputed.json()["size"] == 0  # A's profile is not B's
    await _a_segment_unchanged(client, s, segment, profile_id)


@check("POST", "/api/v1/segments/validate")
async def _validate_rule(client: httpx.AsyncClient, s: Seeded) -> None:
    segment, _ = await _a_segment(client, s)
    body = {"rule": {"type": "segment", "segment_id": segment["id"]}}
    problem(await client.post("/api/v1/segments/validate", json=body, headers=s.b.admin), 400)


@check("POST", "/api/v1/segments/preview")
async def _preview_rule(client: httpx.AsyncClient, s: Seeded) -> None:
    await _a_segment(client, s)
    body = {"rule": {"type": "event", "event": "A only"}}
    mine = await client.post("/api/v1/segments/preview", json=body, headers=s.a.admin)
    assert mine.json()["count"] == 1
    theirs = await client.post("/api/v1/segments/preview", json=body, headers=s.b.admin)
    assert (theirs.json()["count"], theirs.json()["sample"]) == (0, [])


@check("GET", "/api/v1/segments/templates")
async def _list_templates(client: httpx.AsyncClient, s: Seeded) -> None:
    a = await client.get("/api/v1/segments/templates", headers=s.a.admin)
    b = await client.get("/api/v1/segments/templates", headers=s.b.admin)
    assert a.json() == b.json() and b.json()  # the same catalogue, no workspace data


@check("POST", "/api/v1/segments/templates/{key}")
async def _create_from_template(client: httpx.AsyncClient, s: Seeded) -> None:
    url = "/api/v1/segments/templates/new_customers"
    assert (await client.post(url, headers=s.a.admin)).status_code == 201
    assert (await client.post(url, headers=s.b.admin)).status_code == 201  # once per workspace
    listed = (await client.get("/api/v1/segments", headers=s.a.admin)).json()["items"]
    assert [x["template"] for x in listed] == ["new_customers"]


@check("GET", "/api/v1/profiles/{profile_id}/segments")
async def _profile_segments(client: httpx.AsyncClient, s: Seeded) -> None:
    _, profile_id = await _a_segment(client, s)
    url = f"/api/v1/profiles/{profile_id}/segments"
    problem(await client.get(url, headers=s.b.admin), 404)
    assert [m["name"] for m in (await client.get(url, headers=s.a.admin)).json()] == ["A buyers"]
