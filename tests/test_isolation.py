"""One workspace's keys never read or write another's data, on every endpoint there is.

`CHECKS` holds one isolation check per route; `test_every_route_has_an_isolation_check`
fails when a route is added without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.journeys.models import JourneyAlert
from tests.conftest import Tenant, problem

# Routes anyone may call: no workspace data behind them.
PUBLIC = {("GET", "/healthz"), ("HEAD", "/healthz")}


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


@check("DELETE", "/api/v1/profiles/{profile_id}")
async def _erase_profile(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    problem(await client.delete(f"/api/v1/profiles/{profile_id}", headers=s.b.admin), 404)
    assert (
        await client.get(f"/api/v1/profiles/{profile_id}", headers=s.a.admin)
    ).status_code == 200
    await _a_unchanged(client, s)


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


# Messaging: channels and templates

A_CHANNEL = {
    "name": "A mail",
    "kind": "email",
    "settings": {"host": "smtp.a.example", "from_address": "news@a.example"},
    "secrets": {"password": "a-password-never-shown"},
}


async def _a_channel(client: httpx.AsyncClient, s: Seeded) -> dict[str, Any]:
    created = await client.post("/api/v1/channels", json=A_CHANNEL, headers=s.a.admin)
    assert created.status_code == 201, created.text
    channel: dict[str, Any] = created.json()
    return channel


async def _a_channel_unchanged(
    client: httpx.AsyncClient, s: Seeded, channel: dict[str, Any]
) -> None:
    listed = (await client.get("/api/v1/channels", headers=s.a.admin)).json()["items"]
    assert listed == [channel]


def _channel_route_check(method: str, suffix: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        channel = await _a_channel(client, s)
        url = f"/api/v1/channels/{channel['id']}{suffix}"
        body = {"PATCH": {"name": "taken", "secrets": {"password": "b"}}, "POST": {"to": "b@b.ex"}}
        response = await client.request(method, url, json=body.get(method), headers=s.b.admin)
        problem(response, 404)
        await _a_channel_unchanged(client, s, channel)

    return run


for _method, _suffix in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test")]:
    CHECKS[(_method, f"/api/v1/channels/{{channel_id}}{_suffix}")] = _channel_route_check(
        _method, _suffix
    )


@check("GET", "/api/v1/channels")
async def _list_channels(client: httpx.AsyncClient, s: Seeded) -> None:
    channel = await _a_channel(client, s)
    assert (await client.get("/api/v1/channels", headers=s.b.admin)).json()["items"] == []
    await _a_channel_unchanged(client, s, channel)


@check("POST", "/api/v1/channels")
async def _create_channel(client: httpx.AsyncClient, s: Seeded) -> None:
    channel = await _a_channel(client, s)
    mine = await client.post("/api/v1/channels", json=A_CHANNEL, headers=s.b.admin)
    assert mine.status_code == 201  # names per workspace; the first of its kind in B
    assert mine.json()["is_default"] and channel["is_default"]
    await _a_channel_unchanged(client, s, channel)


A_TEMPLATE = {
    "name": "A welcome",
    "channel": "email",
    "content": {"subject": "Hi {{ profile.traits.name }}", "html": "<p>A only</p>"},
}


async def _a_template(client: httpx.AsyncClient, s: Seeded) -> dict[str, Any]:
    created = await client.post("/api/v1/templates", json=A_TEMPLATE, headers=s.a.admin)
    assert created.status_code == 201, created.text
    template: dict[str, Any] = created.json()
    return template


async def _a_template_unchanged(
    client: httpx.AsyncClient, s: Seeded, template: dict[str, Any]
) -> None:
    read = await client.get(f"/api/v1/templates/{template['id']}", headers=s.a.admin)
    assert read.json() == template


def _template_route_check(method: str, suffix: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        template = await _a_template(client, s)
        url = f"/api/v1/templates/{template['id']}{suffix}"
        body = {"PATCH": {"name": "taken"}, "POST": {"profile": {"traits": {"name": "B"}}}}
        response = await client.request(method, url, json=body.get(method), headers=s.b.admin)
        problem(response, 404)
        await _a_template_unchanged(client, s, template)

    return run


for _method, _suffix, _route in [
    ("GET", "", ""),
    ("PATCH", "", ""),
    ("DELETE", "", ""),
    ("GET", "/versions", "/versions"),
    ("GET", "/versions/1", "/versions/{version}"),
    ("POST", "/preview", "/preview"),
]:
    CHECKS[(_method, f"/api/v1/templates/{{template_id}}{_route}")] = _template_route_check(
        _method, _suffix
    )


@check("GET", "/api/v1/templates")
async def _list_message_templates(client: httpx.AsyncClient, s: Seeded) -> None:
    template = await _a_template(client, s)
    for query in ({}, {"archived": "true"}, {"channel": "email"}):
        listed = await client.get("/api/v1/templates", params=query, headers=s.b.admin)
        assert listed.json()["items"] == []
    await _a_template_unchanged(client, s, template)


@check("POST", "/api/v1/templates")
async def _create_message_template(client: httpx.AsyncClient, s: Seeded) -> None:
    from datetime import UTC, datetime

    from clarion.messaging.models import SubscriptionTopic

    template = await _a_template(client, s)
    async with s.app.state.database.write_session() as session:
        topic = SubscriptionTopic(
            workspace_id=s.a.id, name="A news", channel="email", default_state="opted_in",
            double_opt_in=False, created_at=datetime.now(UTC),
        )  # fmt: skip
        session.add(topic)
        await session.commit()
    steal = {**A_TEMPLATE, "name": "steal", "topic_id": topic.id}
    problem(await client.post("/api/v1/templates", json=steal, headers=s.b.admin), 422, "topic_id")
    mine = await client.post("/api/v1/templates", json=A_TEMPLATE, headers=s.b.admin)
    assert mine.status_code == 201  # names are per workspace
    # B previews its own template for A's profile: no such profile in B.
    profile_id = await _a_profile(client, s)
    url = f"/api/v1/templates/{mine.json()['id']}/preview"
    body = {"profile_id": profile_id}
    problem(await client.post(url, json=body, headers=s.b.admin), 404, "profile_id")
    await _a_template_unchanged(client, s, template)


@check("POST", "/api/v1/templates/validate")
async def _validate_message_template(client: httpx.AsyncClient, s: Seeded) -> None:
    template = await _a_template(client, s)
    body = {"channel": "email", "content": A_TEMPLATE["content"]}
    a = await client.post("/api/v1/templates/validate", json=body, headers=s.a.admin)
    b = await client.post("/api/v1/templates/validate", json=body, headers=s.b.admin)
    assert a.json() == b.json() and b.status_code == 200  # no workspace data behind it
    assert (await client.get("/api/v1/templates", headers=s.b.admin)).json()["items"] == []
    await _a_template_unchanged(client, s, template)


# Consent: topics, says, suppressions, and the public pages a signed link opens


def _links(s: Seeded) -> Any:
    from clarion.messaging.consent.service import Links

    return Links.from_settings(s.app.state.settings, s.app.state.secret_keys)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def _a_consent(client: httpx.AsyncClient, s: Seeded) -> tuple[dict[str, Any], str]:
    """A double opt-in topic of A's, A's profile opted out of it, and A's suppression."""
    topic_body = {"name": "A news", "channel": "email", "double_opt_in": True}
    created = await client.post("/api/v1/topics", json=topic_body, headers=s.a.admin)
    assert created.status_code == 201, created.text
    topic: dict[str, Any] = created.json()
    profile_id = await _a_profile(client, s)
    say = {"channel": "email", "topic_id": topic["id"], "state": "opted_out"}
    url = f"/api/v1/profiles/{profile_id}/consent"
    assert (await client.put(url, json=say, headers=s.a.admin)).status_code == 200
    suppression = {"channel": "email", "address": "a@a.example"}
    assert (
        await client.post("/api/v1/suppressions", json=suppression, headers=s.a.admin)
    ).status_code == 201
    return topic, profile_id


async def _a_consent_unchanged(
    client: httpx.AsyncClient, s: Seeded, topic: dict[str, Any], profile_id: str
) -> None:
    assert (await client.get("/api/v1/topics", headers=s.a.admin)).json()["items"] == [topic]
    says = (await client.get(f"/api/v1/profiles/{profile_id}/consent", headers=s.a.admin)).json()
    assert [(x["scope"], x["state"], x["source"]) for x in says] == [
        (f"email:{topic['id']}", "opted_out", "api")
    ]
    kept = (await client.get("/api/v1/suppressions", headers=s.a.admin)).json()["items"]
    assert [x["address"] for x in kept] == ["a@a.example"]


def _consent_route_check(method: str, path: str, body: dict[str, Any] | None) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        topic, profile_id = await _a_consent(client, s)
        [suppression] = (await client.get("/api/v1/suppressions", headers=s.a.admin)).json()[
            "items"
        ]
        ids = {
            "topic_id": topic["id"],
            "profile_id": profile_id,
            "suppression_id": suppression["id"],
        }
        url = path.format(**ids)
        payload = {k: ids.get(v, v) for k, v in body.items()} if body else None
        problem(await client.request(method, url, json=payload, headers=s.b.admin), 404)
        await _a_consent_unchanged(client, s, topic, profile_id)

    return run


for _method, _path_template, _body in [
    ("GET", "/api/v1/topics/{topic_id}", None),
    ("PATCH", "/api/v1/topics/{topic_id}", {"name": "taken"}),
    ("DELETE", "/api/v1/topics/{topic_id}", None),
    ("GET", "/api/v1/profiles/{profile_id}/consent", None),
    ("PUT", "/api/v1/profiles/{profile_id}/consent", {"channel": "email", "state": "opted_in"}),
    ("POST", "/api/v1/profiles/{profile_id}/consent/opt-in", {"topic_id": "topic_id"}),
    ("DELETE", "/api/v1/suppressions/{suppression_id}", None),
]:
    CHECKS[(_method, _path_template)] = _consent_route_check(_method, _path_template, _body)


@check("GET", "/api/v1/topics")
async def _list_topics(client: httpx.AsyncClient, s: Seeded) -> None:
    topic, profile_id = await _a_consent(client, s)
    assert (await client.get("/api/v1/topics", headers=s.b.admin)).json()["items"] == []
    await _a_consent_unchanged(client, s, topic, profile_id)


@check("POST", "/api/v1/topics")
async def _create_topic(client: httpx.AsyncClient, s: Seeded) -> None:
    topic, profile_id = await _a_consent(client, s)
    same_name = {"name": "A news", "channel": "email"}
    assert (
        await client.post("/api/v1/topics", json=same_name, headers=s.b.admin)
    ).status_code == 201  # names are per workspace
    await _a_consent_unchanged(client, s, topic, profile_id)


@check("GET", "/api/v1/suppressions")
async def _list_suppressions(client: httpx.AsyncClient, s: Seeded) -> None:
    topic, profile_id = await _a_consent(client, s)
    assert (await client.get("/api/v1/suppressions", headers=s.b.admin)).json()["items"] == []
    await _a_consent_unchanged(client, s, topic, profile_id)


@check("POST", "/api/v1/suppressions")
async def _create_suppression(client: httpx.AsyncClient, s: Seeded) -> None:
    topic, profile_id = await _a_consent(client, s)
    body = {"channel": "email", "address": "A@A.example", "reason": "complaint"}
    created = await client.post("/api/v1/suppressions", json=body, headers=s.b.admin)
    assert created.status_code == 201  # B's own list: A's entry is not B's
    await _a_consent_unchanged(client, s, topic, profile_id)


@check("POST", "/api/v1/consents/import")
async def _import_consents(client: httpx.AsyncClient, s: Seeded) -> None:
    topic, profile_id = await _a_consent(client, s)
    headers = {**s.b.admin, "Content-Type": "text/csv"}
    made = await client.post(
        "/api/v1/profiles/imports", content=b"user_id\na-user\n", headers=headers
    )
    assert made.status_code == 200, made.text
    items = [
        {"user_id": "a-user", "channel": "email", "topic": topic["id"], "state": "opted_in"},
        {"user_id": "a-user", "channel": "email", "topic": "A news", "state": "opted_in"},
        {"user_id": "a-user", "channel": "email", "state": "opted_out"},
    ]
    response = await client.post("/api/v1/consents/import", json=items, headers=s.b.admin)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1  # only the channel-wide say, on B's own a-user
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [
        (0, "topic"),
        (1, "topic"),
    ]
    await _a_consent_unchanged(client, s, topic, profile_id)


def _public_check(method: str, prefix: str) -> Check:
    """A link signed for B's workspace naming A's profile or topic (and one of A's naming
    B's topic) finds nothing: the same 404 page, and A keeps its consent."""

    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        import uuid

        topic, profile_id = await _a_consent(client, s)
        b_topic = (
            await client.post(
                "/api/v1/topics", json={"name": "B", "channel": "email"}, headers=s.b.admin
            )
        ).json()
        links, a_profile = _links(s), uuid.UUID(profile_id)
        urls = {
            "/u/": [
                links.unsubscribe(workspace_id=s.b.id, profile_id=a_profile),
                links.unsubscribe(workspace_id=s.b.id, profile_id=a_profile, topic_id=topic["id"]),
                links.unsubscribe(
                    workspace_id=s.a.id, profile_id=a_profile, topic_id=b_topic["id"]
                ),
            ],
            "/p/": [links.preferences(workspace_id=s.b.id, profile_id=a_profile)],
            "/c/": [
                links.confirm(workspace_id=s.b.id, profile_id=a_profile, topic_id=topic["id"]),
                links.confirm(workspace_id=s.a.id, profile_id=a_profile, topic_id=b_topic["id"]),
            ],
        }[prefix]
        form = f"List-Unsubscribe=One-Click&action=undo&topic={topic['id']}&all_email_off=1"
        for url in urls:
            response = await client.request(
                method,
                _path(url),
                content=form.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 404, response.text
            assert response.headers["content-type"].startswith("text/html")
        await _a_consent_unchanged(client, s, topic, profile_id)

    return run


for _prefix in ("/u/", "/p/", "/c/"):
    for _method in ("GET", "POST"):
        CHECKS[(_method, _prefix + "{token}")] = _public_check(_method, _prefix)


# Messaging: tracking links (the token is the only key) and the in-app inbox


async def _a_tracked_message(s: Seeded, *, channel: str = "email") -> tuple[Any, Any]:
    """A's profile of user "a-user" and a message to it: a sent email whose view page was
    kept, or an inbox message delivered to it."""
    from tests.messaging.test_engagement import make_message, person
    from tests.messaging.test_inbox import deliver

    database: Database = s.app.state.database
    profile_id = await person(database, s.a, "a-user")
    if channel == "inbox":
        return profile_id, await deliver(database, s.a, profile_id, "A only")
    html = {"html": "<p>A only</p>"}
    return profile_id, await make_message(database, s.a, profile_id, content=html)


async def _a_tracked_message_untouched(s: Seeded, message_id: Any) -> None:
    from sqlalchemy import func, select

    from clarion.messaging.models import Message, MessageEvent

    async with s.app.state.database.read_session() as session:
        message = await session.get(Message, message_id)
        recorded = await session.scalar(
            select(func.count()).where(MessageEvent.message_id == message_id)
        )
    assert message is not None
    assert (message.status, message.opened_at, message.clicked_at) == ("sent", None, None)
    assert recorded == 0


def _tracking_check(method: str, kind: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        from clarion.messaging.tracking import TRANSPARENT_GIF, LinkSigner

        _, message_id = await _a_tracked_message(s)
        # A token for A's message, signed under any key but this installation's.
        forged = LinkSigner("another-installation-secret-key")
        genuine = LinkSigner(s.app.state.secret_keys.current)
        paths = {
            "open": lambda signer: f"/t/o/{signer.sign_open(message_id)}.gif",
            "click": lambda signer: f"/t/c/{signer.sign_click(message_id, 0)}",
            "view": lambda signer: f"/v/{signer.sign_view(message_id)}",
        }[kind]
        response = await client.request(method, paths(forged))
        if kind == "open":
            assert response.status_code == 200
            assert response.content == (TRANSPARENT_GIF if method == "GET" else b"")
        else:
            assert response.status_code == 404 and "location" not in response.headers
            assert "A only" not in response.text
        await _a_tracked_message_untouched(s, message_id)
        reached = await client.request(method, paths(genuine))  # the real link does work
        assert reached.status_code in (200, 302)
        if kind == "view":
            assert "A only" in reached.text

    return run


for _method, _path_, _kind in [
    ("GET", "/t/o/{token}.gif", "open"),
    ("HEAD", "/t/o/{token}.gif", "open"),
    ("GET", "/t/c/{token}", "click"),
    ("HEAD", "/t/c/{token}", "click"),
    ("GET", "/v/{token}", "view"),
]:
    CHECKS[(_method, _path_)] = _tracking_check(_method, _kind)


@dataclass
class _Inboxes:
    message_id: Any
    a: dict[str, str]  # A's app, for A's "a-user"
    b: dict[str, str]  # B's app, for B's own "a-user"
    mixed: dict[str, str]  # B's inbox key with A's hash of "a-user"


async def _inboxes(client: httpx.AsyncClient, s: Seeded) -> _Inboxes:
    from tests.messaging.test_engagement import person
    from tests.messaging.test_inbox import inbox_headers

    _, message_id = await _a_tracked_message(s, channel="inbox")
    await person(s.app.state.database, s.b, "a-user")  # the same user id in B
    return _Inboxes(
        message_id,
        a=await inbox_headers(client, s.a, "a-user"),
        b=await inbox_headers(client, s.b, "a-user"),
        mixed=await inbox_headers(client, s.a, "a-user", key_of=s.b),
    )


async def _a_inbox_unchanged(client: httpx.AsyncClient, i: _Inboxes) -> None:
    page = (await client.get("/inbox/v1/messages", headers=i.a)).json()
    assert [m["title"] for m in page["items"]] == ["A only"]
    assert (page["unread_count"], page["items"][0]["archived_at"]) == (1, None)


@check("GET", "/inbox/v1/messages")
async def _list_inbox(client: httpx.AsyncClient, s: Seeded) -> None:
    i = await _inboxes(client, s)
    problem(await client.get("/inbox/v1/messages", headers=i.mixed), 401)
    for archived in ("false", "true"):
        response = await client.get(
            "/inbox/v1/messages", params={"archived": archived}, headers=i.b
        )
        assert response.json() == {"items": [], "next_cursor": None, "unread_count": 0}
    await _a_inbox_unchanged(client, i)


@check("POST", "/inbox/v1/messages/read-all")
async def _read_all_inbox(client: httpx.AsyncClient, s: Seeded) -> None:
    i = await _inboxes(client, s)
    problem(await client.post("/inbox/v1/messages/read-all", headers=i.mixed), 401)
    response = await client.post("/inbox/v1/messages/read-all", headers=i.b)
    assert response.json() == {"updated": 0}
    await _a_inbox_unchanged(client, i)


def _inbox_message_check(action: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        i = await _inboxes(client, s)
        url = f"/inbox/v1/messages/{i.message_id}/{action}"
        problem(await client.post(url, headers=i.mixed), 401)
        problem(await client.post(url, headers=i.b), 404)
        await _a_inbox_unchanged(client, i)

    return run


for _action in ("read", "unread", "archive"):
    CHECKS[("POST", f"/inbox/v1/messages/{{message_id}}/{_action}")] = _inbox_message_check(_action)


@check("GET", "/inbox/v1/stream")
async def _inbox_stream(client: httpx.AsyncClient, s: Seeded) -> None:
    from tests.messaging.test_engagement import person
    from tests.messaging.test_inbox import deliver, next_message, sse
    from tests.support import start_live_server

    i = await _inboxes(client, s)
    problem(await client.get("/inbox/v1/stream", headers=i.mixed), 401)
    database: Database = s.app.state.database
    a_profile = await person(database, s.a, "a-user")
    b_profile = await person(database, s.b, "a-user")
    with start_live_server(s.app.state.settings) as server:
        async with sse(server.url, i.b) as lines:
            await deliver(database, s.a, a_profile, "A again")  # first, so a leak shows first
            mine = await deliver(database, s.b, b_profile, "B only")
            assert (await next_message(lines))["id"] == str(mine)


@check("GET", "/api/v1/inbox/credentials")
async def _inbox_credentials(client: httpx.AsyncClient, s: Seeded) -> None:
    from tests.messaging.test_inbox import credentials

    a, b = await credentials(client, s.a), await credentials(client, s.b)
    assert a["inbox_key"] != b["inbox_key"] and a["inbox_secret"] != b["inbox_secret"]
    assert b["inbox_key"].startswith(f"ibx_{s.b.id}_")


@check("POST", "/api/v1/inbox/credentials/rotate")
async def _rotate_inbox_credentials(client: httpx.AsyncClient, s: Seeded) -> None:
    from tests.messaging.test_inbox import credentials

    i = await _inboxes(client, s)
    a = await credentials(client, s.a)
    rotated = await client.post("/api/v1/inbox/credentials/rotate", headers=s.b.admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["inbox_key"].startswith(f"ibx_{s.b.id}_")
    assert await credentials(client, s.a) == a  # B rotates its own pair only
    await _a_inbox_unchanged(client, i)


# --- Messages and sending rules ----------------------------------------------------------------


async def _a_message(client: httpx.AsyncClient, s: Seeded) -> dict[str, Any]:
    """A message of A's (queued: no worker runs here) to A's profile `a-user`."""
    from clarion.core.jobs.worker import Worker
    from clarion.pipeline import Pipeline

    clock = SystemClock()
    pipeline = Pipeline(s.app.state.database, s.app.state.settings, clock)
    await Worker(s.app.state.database, pipeline.registry(), clock=clock).drain()  # a-user
    await pipeline.close()
    template = await _a_template(client, s)
    sent = await client.post(
        "/api/v1/messages",
        json={"template_id": template["id"], "user_id": "a-user", "idempotency_key": "a-1"},
        headers=s.a.admin,
    )
    assert sent.status_code == 202, sent.text
    message: dict[str, Any] = sent.json()
    return message


@check("POST", "/api/v1/messages")
async def _send_message(client: httpx.AsyncClient, s: Seeded) -> None:
    message = await _a_message(client, s)
    # B can name neither A's template nor A's profile: nothing is queued anywhere.
    body = {"template_id": message["template_id"], "user_id": "a-user"}
    problem(await client.post("/api/v1/messages", json=body, headers=s.b.admin), 422)
    body = {"template_id": message["template_id"], "profile_id": message["profile_id"]}
    problem(await client.post("/api/v1/messages", json=body, headers=s.b.admin), 422)
    assert (await client.get("/api/v1/messages", headers=s.b.admin)).json()["items"] == []
    listed = (await client.get("/api/v1/messages", headers=s.a.admin)).json()["items"]
    assert [m["id"] for m in listed] == [message["id"]]


@check("GET", "/api/v1/messages")
async def _list_messages(client: httpx.AsyncClient, s: Seeded) -> None:
    message = await _a_message(client, s)
    for query in ({}, {"profile_id": message["profile_id"]}, {"status": "queued"}):
        listed = await client.get("/api/v1/messages", params=query, headers=s.b.admin)
        assert listed.json()["items"] == []
        mine = await client.get("/api/v1/messages", params=query, headers=s.a.admin)
        assert [m["id"] for m in mine.json()["items"]] == [message["id"]]


@check("GET", "/api/v1/messages/{message_id}")
async def _read_message(client: httpx.AsyncClient, s: Seeded) -> None:
    message = await _a_message(client, s)
    problem(await client.get(f"/api/v1/messages/{message['id']}", headers=s.b.admin), 404)
    read = await client.get(f"/api/v1/messages/{message['id']}", headers=s.a.admin)
    assert read.json()["status"] == "queued"


@check("GET", "/api/v1/messaging/policy")
@check("PUT", "/api/v1/messaging/policy")
async def _policy(client: httpx.AsyncClient, s: Seeded) -> None:
    quiet = {"quiet_hours_start": "21:00", "quiet_hours_end": "08:00", "quiet_channels": ["sms"]}
    put = await client.put("/api/v1/messaging/policy", json=quiet, headers=s.a.admin)
    assert put.status_code == 200, put.text
    b = (await client.get("/api/v1/messaging/policy", headers=s.b.admin)).json()
    assert b["quiet_hours_start"] is None and b["quiet_channels"] == []
    other = {"quiet_hours_start": "22:00", "quiet_hours_end": "07:00"}
    assert (
        await client.put("/api/v1/messaging/policy", json=other, headers=s.b.admin)
    ).status_code == 200
    a = (await client.get("/api/v1/messaging/policy", headers=s.a.admin)).json()
    assert (a["quiet_hours_start"], a["quiet_channels"]) == ("21:00", ["sms"])


@check("GET", "/api/v1/frequency-caps")
@check("POST", "/api/v1/frequency-caps")
@check("DELETE", "/api/v1/frequency-caps/{cap_id}")
async def _caps(client: httpx.AsyncClient, s: Seeded) -> None:
    body = {"channel": "email", "max_messages": 3, "period_seconds": 86400}
    cap = (await client.post("/api/v1/frequency-caps", json=body, headers=s.a.admin)).json()
    assert (await client.get("/api/v1/frequency-caps", headers=s.b.admin)).json() == []
    problem(await client.delete(f"/api/v1/frequency-caps/{cap['id']}", headers=s.b.admin), 404)
    listed = (await client.get("/api/v1/frequency-caps", headers=s.a.admin)).json()
    assert [c["id"] for c in listed] == [cap["id"]]


# Campaigns


async def _a_campaign(client: httpx.AsyncClient, s: Seeded) -> dict[str, Any]:
    """A draft campaign of A's to its segment (holding A's profile), with A's template."""
    segment, _ = await _a_segment(client, s)
    template = await _a_template(client, s)
    body = {
        "name": "A sale",
        "audience": {"type": "segment", "segment_id": segment["id"]},
        "template_id": template["id"],
    }
    created = await client.post("/api/v1/campaigns", json=body, headers=s.a.admin)
    assert created.status_code == 201, created.text
    campaign: dict[str, Any] = created.json()
    return campaign


async def _a_campaign_unchanged(
    client: httpx.AsyncClient, s: Seeded, campaign: dict[str, Any]
) -> None:
    read = await client.get(f"/api/v1/campaigns/{campaign['id']}", headers=s.a.admin)
    assert read.json() == campaign
    preview = await client.get(f"/api/v1/campaigns/{campaign['id']}/preview", headers=s.a.admin)
    assert preview.json()["count"] == 1


def _campaign_route_check(method: str, suffix: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        campaign = await _a_campaign(client, s)
        url = f"/api/v1/campaigns/{campaign['id']}{suffix}"
        body = {"PATCH": {"name": "taken"}}.get(method)
        response = await client.request(method, url, json=body, headers=s.b.admin)
        problem(response, 404)
        await _a_campaign_unchanged(client, s, campaign)

    return run


for _method, _suffix in [
    ("GET", ""),
    ("PATCH", ""),
    ("DELETE", ""),
    ("POST", "/send"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/cancel"),
    ("GET", "/preview"),
    ("GET", "/results"),
    ("GET", "/recipients"),
]:
    CHECKS[(_method, f"/api/v1/campaigns/{{campaign_id}}{_suffix}")] = _campaign_route_check(
        _method, _suffix
    )


@check("GET", "/api/v1/campaigns")
async def _list_campaigns(client: httpx.AsyncClient, s: Seeded) -> None:
    campaign = await _a_campaign(client, s)
    assert (await client.get("/api/v1/campaigns", headers=s.b.admin)).json()["items"] == []
    await _a_campaign_unchanged(client, s, campaign)


@check("POST", "/api/v1/campaigns")
async def _create_campaign(client: httpx.AsyncClient, s: Seeded) -> None:
    campaign = await _a_campaign(client, s)
    mine = await client.post("/api/v1/templates", json=A_TEMPLATE, headers=s.b.admin)
    segment = campaign["audience"]["segment_id"]
    steal = {
        "name": "A sale",
        "audience": {"type": "segment", "segment_id": segment},
        "template_id": mine.json()["id"],
    }
    response = await client.post("/api/v1/campaigns", json=steal, headers=s.b.admin)
    problem(response, 422, "audience.segment_id")
    steal = {**steal, "audience": {"type": "list", "user_ids": ["a-user"]}}
    response = await client.post(
        "/api/v1/campaigns", json={**steal, "template_id": campaign["template_id"]},
        headers=s.b.admin,
    )  # fmt: skip
    problem(response, 422, "template_id")
    created = await client.post("/api/v1/campaigns", json=steal, headers=s.b.admin)
    assert created.status_code == 201  # names per workspace; A's user is no one in B
    url = f"/api/v1/campaigns/{created.json()['id']}/preview"
    assert (await client.get(url, headers=s.b.admin)).json() == {"count": 0, "sample": []}
    await _a_campaign_unchanged(client, s, campaign)


@check("POST", "/api/v1/campaigns/preview")
async def _preview_audience(client: httpx.AsyncClient, s: Seeded) -> None:
    campaign = await _a_campaign(client, s)
    url = "/api/v1/campaigns/preview"
    profile_id = await _a_profile(client, s)
    listed = {"type": "list", "user_ids": ["a-user"], "profile_ids": [profile_id]}
    mine = await client.post(url, json={"audience": listed}, headers=s.a.admin)
    assert mine.json()["count"] == 1
    theirs = await client.post(url, json={"audience": listed}, headers=s.b.admin)
    assert theirs.json() == {"count": 0, "sample": []}
    problem(
        await client.post(url, json={"audience": campaign["audience"]}, headers=s.b.admin),
        422,
        "audience.segment_id",
    )


# Journeys


def _welcome(template_id: int) -> dict[str, Any]:
    """A one-email journey on sign-up."""
    return {
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "mail",
            },
            {
                "id": "mail",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template_id}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    }


async def _a_journey(client: httpx.AsyncClient, s: Seeded) -> dict[str, Any]:
    """A live journey of A's, sending A's template."""
    template = await _a_template(client, s)
    body = {"name": "A welcome", "graph": _welcome(template["id"])}
    created = await client.post("/api/v1/journeys", json=body, headers=s.a.admin)
    assert created.status_code == 201, created.text
    url = f"/api/v1/journeys/{created.json()['id']}/publish"
    assert (await client.post(url, headers=s.a.admin)).status_code == 200
    journey: dict[str, Any] = (
        await client.get(f"/api/v1/journeys/{created.json()['id']}", headers=s.a.admin)
    ).json()
    return journey


async def _a_journey_unchanged(
    client: httpx.AsyncClient, s: Seeded, journey: dict[str, Any]
) -> None:
    read = await client.get(f"/api/v1/journeys/{journey['id']}", headers=s.a.admin)
    assert read.json() == journey
    versions = await client.get(f"/api/v1/journeys/{journey['id']}/versions", headers=s.a.admin)
    assert [v["number"] for v in versions.json()] == [1]


def _journey_route_check(method: str, suffix: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        journey = await _a_journey(client, s)
        url = f"/api/v1/journeys/{journey['id']}{suffix}"
        body = {"PATCH": {"name": "taken"}}.get(method)
        response = await client.request(method, url, json=body, headers=s.b.admin)
        problem(response, 404)
        await _a_journey_unchanged(client, s, journey)

    return run


for _method, _suffix in [
    ("GET", ""),
    ("PATCH", ""),
    ("POST", "/publish"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/archive"),
    ("GET", "/versions"),
    ("GET", "/runs"),
    ("GET", "/stats"),
    ("GET", "/alerts"),
]:
    CHECKS[(_method, f"/api/v1/journeys/{{journey_id}}{_suffix}")] = _journey_route_check(
        _method, _suffix
    )


@check("GET", "/api/v1/journeys/alerts")
async def _journey_alerts(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    now = datetime.now(UTC)
    async with s.app.state.database.write_session() as session:
        session.add(
            JourneyAlert(
                workspace_id=s.a.id, journey_id=journey["id"], kind="stuck_node", node="mail",
                state="open", detail={"runs": 1}, opened_at=now, updated_at=now,
            )
        )  # fmt: skip
        await session.commit()
    mine = await client.get("/api/v1/journeys/alerts", headers=s.a.admin)
    assert [a["journey_id"] for a in mine.json()["items"]] == [journey["id"]]
    for params in ({}, {"journey_id": journey["id"]}, {"state": "open"}):
        theirs = await client.get("/api/v1/journeys/alerts", params=params, headers=s.b.admin)
        assert theirs.status_code == 200 and theirs.json()["items"] == []


@check("GET", "/api/v1/journeys/{journey_id}/timing")
async def _journey_timing(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    url = f"/api/v1/journeys/{journey['id']}/timing"
    params = {"from_node": "start", "to_node": "done"}
    problem(await client.get(url, params=params, headers=s.b.admin), 404)
    assert (await client.get(url, params=params, headers=s.a.admin)).json()["runs"] == 0
    await _a_journey_unchanged(client, s, journey)


@check("GET", "/api/v1/journeys/ready-made")
async def _ready_made_list(client: httpx.AsyncClient, s: Seeded) -> None:
    # The same catalogue for everyone: no workspace's data in it.
    mine = await client.get("/api/v1/journeys/ready-made", headers=s.a.admin)
    assert (await client.get("/api/v1/journeys/ready-made", headers=s.b.admin)).json() == (
        mine.json()
    )


@check("POST", "/api/v1/journeys/ready-made")
async def _ready_made_create(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    template_id = journey["graph"]["nodes"][1]["actions"][0]["template_id"]
    body = {"kind": "birthday", "template_ids": [template_id]}
    made = await client.post("/api/v1/journeys/ready-made", json=body, headers=s.b.admin)
    problem(made, 400, "template_ids.0")  # A's template is not B's to use
    await _a_journey_unchanged(client, s, journey)


@check("POST", "/api/v1/journeys/{journey_id}/simulate")
async def _simulate_journey(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    url = f"/api/v1/journeys/{journey['id']}/simulate"
    body = {"events": [{"event": "Signed Up", "at": "2026-11-02T15:00:00Z"}]}
    problem(await client.post(url, json=body, headers=s.b.admin), 404)
    profile_id = await _a_profile(client, s)
    mine = await client.post(url, json={**body, "profile_id": profile_id}, headers=s.a.admin)
    assert mine.json()["outcome"] == "completed"
    await _a_journey_unchanged(client, s, journey)


def _journey_run_check(method: str, suffix: str) -> Check:
    async def run(client: httpx.AsyncClient, s: Seeded) -> None:
        journey = await _a_journey(client, s)
        url = f"/api/v1/journeys/{journey['id']}/runs/1{suffix}"
        problem(await client.request(method, url, headers=s.b.admin), 404)
        await _a_journey_unchanged(client, s, journey)

    return run


for _method, _suffix in [("GET", ""), ("POST", "/retry"), ("POST", "/skip")]:
    CHECKS[(_method, f"/api/v1/journeys/{{journey_id}}/runs/{{run_id}}{_suffix}")] = (
        _journey_run_check(_method, _suffix)
    )


@check("GET", "/api/v1/profiles/{profile_id}/journeys")
async def _profile_journeys(client: httpx.AsyncClient, s: Seeded) -> None:
    profile_id = await _a_profile(client, s)
    url = f"/api/v1/profiles/{profile_id}/journeys"
    problem(await client.get(url, headers=s.b.admin), 404)
    assert (await client.get(url, headers=s.a.admin)).status_code == 200


@check("GET", "/api/v1/journeys")
async def _list_journeys(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    assert (await client.get("/api/v1/journeys", headers=s.b.admin)).json()["items"] == []
    await _a_journey_unchanged(client, s, journey)


@check("POST", "/api/v1/journeys")
async def _create_journey(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    # B may draft a journey naming A's template, but never publish it.
    body = {"name": "A welcome", "graph": journey["graph"]}
    created = await client.post("/api/v1/journeys", json=body, headers=s.b.admin)
    assert created.status_code == 201  # names per workspace
    url = f"/api/v1/journeys/{created.json()['id']}/publish"
    problem(await client.post(url, headers=s.b.admin), 400, "nodes.mail.actions.0.template_id")
    await _a_journey_unchanged(client, s, journey)


@check("POST", "/api/v1/journeys/validate")
async def _validate_journey(client: httpx.AsyncClient, s: Seeded) -> None:
    journey = await _a_journey(client, s)
    body = {"graph": journey["graph"]}
    mine = await client.post("/api/v1/journeys/validate", json=body, headers=s.a.admin)
    assert mine.json() == {"valid": True, "errors": []}
    theirs = await client.post("/api/v1/journeys/validate", json=body, headers=s.b.admin)
    assert theirs.json()["valid"] is False
    assert [e["field"] for e in theirs.json()["errors"]] == ["nodes.mail.actions.0.template_id"]


@check("POST", "/api/v1/channels/{channel_id}/bounces")
async def _report_bounce(client: httpx.AsyncClient, s: Seeded) -> None:
    channel = await _a_channel(client, s)
    url = f"/api/v1/channels/{channel['id']}/bounces"
    problem(await client.post(url, content=b"mail", headers=s.b.admin), 404)
    mine = await client.post(url, content=b"not a bounce", headers=s.a.admin)
    assert mine.json() == {"status": None}


@check("POST", "/hooks/twilio/{channel_id}")
async def _twilio_hook(client: httpx.AsyncClient, s: Seeded) -> None:
    # Only a callback signed with the channel's own auth token is heard: B's key is no help.
    sms = {
        "name": "A texts",
        "kind": "sms",
        "settings": {"account_sid": "AC1", "from_number": "+15550000000"},
        "secrets": {"auth_token": "a-token"},
    }
    channel = (await client.post("/api/v1/channels", json=sms, headers=s.a.admin)).json()
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    hook = f"/hooks/twilio/{channel['id']}"
    problem(await client.post(hook, data=params, headers=s.b.admin), 403)
    problem(await client.post(hook, data=params, headers={"X-Twilio-Signature": "x"}), 403)
