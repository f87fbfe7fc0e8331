"""Segments over the API: definitions and their bad input, preview, real-time entries and
exits with their events, lapses at the moment they happen, recompute, explain, members."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from clarion import pipeline as pipeline_module
from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.models import Job, RecurringJob
from clarion.core.jobs.worker import Worker
from clarion.core.pagination import encode_cursor
from clarion.core.settings import Settings
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from clarion.pipeline import Pipeline
from clarion.profiles.models import ProfileEvent
from clarion.segments.aggregates import micros
from clarion.segments.models import ProfileSegmentState, Segment
from clarion.segments.parsing import RuleError, parse_rule
from tests.conftest import Tenant, problem

BUYERS = {
    "type": "event",
    "event": "Order Completed",
    "operator": "gte",
    "count": 2,
    "window": {"last_days": 30},
}


@dataclass
class Shop:
    """A tenant with a pipeline and worker on a frozen clock, and helpers to use them."""

    client: httpx.AsyncClient
    tenant: Tenant
    clock: FrozenClock
    worker: Worker
    database: Database

    async def send(self, *messages: dict[str, Any]) -> None:
        """Ingest the messages and process everything due."""
        for message in messages:
            message.setdefault("messageId", uuid.uuid4().hex)
        response = await self.client.post(
            "/v1/batch", json={"batch": list(messages)}, auth=self.tenant.writer
        )
        assert response.status_code == 200, response.text
        await self.run()

    async def run(self) -> None:
        """Run every job due at the clock's time (and those they cause)."""
        await self.worker.drain()

    async def create(self, rule: Any, name: str = "Buyers") -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/segments",
            json={"name": name, "rule": rule},
            headers=self.tenant.admin,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def members(self, segment_id: int) -> set[str]:
        response = await self.client.get(
            f"/api/v1/segments/{segment_id}/members", headers=self.tenant.admin
        )
        assert response.status_code == 200, response.text
        return {item["profile_id"] for item in response.json()["items"]}

    async def profile_id(self, user_id: str) -> str:
        found = await self.client.get(
            "/api/v1/profiles", params={"user_id": user_id}, headers=self.tenant.admin
        )
        [profile] = found.json()["items"]
        return str(profile["id"])

    async def emitted(self, name: str) -> list[dict[str, Any]]:
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(Event)
                .where(Event.workspace_id == self.tenant.id, Event.name == name)
                .order_by(Event.id)
            )
            return [{"user_id": e.user_id, "properties": e.properties} for e in rows.all()]

    async def message_ids(self, name: str) -> list[str]:
        """The messageIds of the events named `name`, in the order stored."""
        async with self.database.read_session() as session:
            ids = await session.scalars(
                select(Event.message_id)
                .where(Event.workspace_id == self.tenant.id, Event.name == name)
                .order_by(Event.id)
            )
            return list(ids.all())

    async def timeline(self, profile_id: str) -> list[str | None]:
        """The names of the events on the profile's timeline, in the order stored."""
        async with self.database.read_session() as session:
            names = await session.scalars(
                select(Event.name)
                .join(ProfileEvent, ProfileEvent.event_id == Event.id)
                .where(ProfileEvent.profile_id == uuid.UUID(profile_id))
                .order_by(Event.id)
            )
            return list(names.all())


@pytest.fixture
async def shop(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> AsyncIterator[Shop]:
    # Ahead of the wall clock by more than a test lasts: jobs the event writer enqueues (at
    # the wall clock's time) are always due when the test's worker runs. The API shares the
    # test's clock, so what it schedules (the hourly recompute) is due only when a test moves
    # the clock past it.
    clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=10))
    wall, app.state.clock = app.state.clock, clock
    pipeline = Pipeline(app.state.database, settings, clock)
    worker = Worker(app.state.database, pipeline.registry(), clock=clock)
    yield Shop(client, tenant, clock, worker, app.state.database)
    await pipeline.close()
    app.state.clock = wall


def order(user_id: str, at: datetime, revenue: float = 10.0) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user_id,
        "timestamp": at.isoformat(),
        "properties": {"revenue": revenue, "currency": "USD"},
    }


async def test_bad_rules_are_refused_naming_the_node_and_nothing_is_saved(shop: Shop) -> None:
    admin = shop.tenant.admin
    cases = [
        ({"type": "trait", "trait": "plan", "operator": "like", "value": "x"}, "rule.operator"),
        ({"type": "trait", "trait": "age", "operator": "gt", "value": [1]}, "rule.value"),
        (
            {"type": "all", "conditions": [{**BUYERS, "window": {"last_days": 0}}]},
            "rule.conditions.0.window.last_days",
        ),
        (
            {"type": "event", "event": "X", "window": {"from": "2026-02-01", "to": "2026-01-01"}},
            "rule.window",
        ),
        ({"type": "segment", "segment_id": 999_999}, "rule.segment_id"),
        ({"type": "shape"}, "rule.type"),
        ([["plan eq pro"], ["age huge 3"]], "rule.1.0.operator"),
        # Offsets that move an instant past the years a date-time can hold.
        (
            {
                "type": "occurrence",
                "event": "X",
                "operator": "before",
                "value": "0001-01-01T00:00:00+01:00",
            },
            "rule.value",
        ),
        (
            {
                "type": "event",
                "event": "X",
                "window": {"from": "9999-12-31T23:00:00-05:00", "to": "9999-12-31T23:30:00-05:00"},
            },
            "rule.window.from",
        ),
        # The conjunctive form refuses what the object form refuses.
        ([["plan exists 3"]], "rule.0.0"),
        ([["plan in pro,,team"]], "rule.0.0"),
    ]
    as_json = {**admin, "content-type": "application/json"}
    for rule, field in cases:
        # Python's JSON writer, which writes infinities and NaN as clients may send them.
        response = await shop.client.post(
            "/api/v1/segments", content=json.dumps({"name": "Bad", "rule": rule}), headers=as_json
        )
        problem(response, 400, field)
        checked = await shop.client.post(
            "/api/v1/segments/validate", content=json.dumps({"rule": rule}), headers=as_json
        )
        problem(checked, 400, field)
    # Numbers JSON columns cannot keep (stored as null, or not at all, once) never reach the
    # rule: the API's reader refuses the body (core.routing). Rules read otherwise (a journey
    # applied from YAML, say) are still refused naming the node.
    unkeepable = [
        ({"type": "trait", "trait": "age", "operator": "lt", "value": float("inf")}, "rule.value"),
        ({"type": "trait", "trait": "age", "operator": "lt", "value": 10**30}, "rule.value"),
        (
            {"type": "trait", "trait": "age", "operator": "between", "value": [1, float("nan")]},
            "rule.value.1",
        ),
        (
            {
                "type": "event",
                "event": "X",
                "where": {"type": "property", "property": "n", "operator": "eq", "value": 2**64},
            },
            "rule.where.value",
        ),
    ]
    for rule, field in unkeepable:
        for path, body in (
            ("/api/v1/segments", {"name": "Bad", "rule": rule}),
            ("/api/v1/segments/validate", {"rule": rule}),
        ):
            response = await shop.client.post(path, content=json.dumps(body), headers=as_json)
            problem(response, 422, "body")
        with pytest.raises(RuleError) as refused:
            parse_rule(rule)
        assert [error.field for error in refused.value.errors] == [field]
    # JSON text past a double's range (Python reads it as infinity).
    literal = b'{"name": "Bad", "rule": {"type": "trait", "trait": "a", "operator": "lt", '
    literal += b'"value": 1e400}}'
    response = await shop.client.post("/api/v1/segments", content=literal, headers=as_json)
    problem(response, 422, "body")
    blank = await shop.client.post(
        "/api/v1/segments", json={"name": "   ", "rule": BUYERS}, headers=admin
    )
    problem(blank, 422, "name")
    listed = await shop.client.get("/api/v1/segments", headers=admin)
    assert listed.json()["items"] == []


async def test_a_cycle_of_references_is_refused(shop: Shop) -> None:
    first = await shop.create({"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"})
    second = await shop.create({"type": "segment", "segment_id": first["id"]}, name="Second")
    response = await shop.client.patch(
        f"/api/v1/segments/{first['id']}",
        json={
            "rule": {"type": "not", "condition": {"type": "segment", "segment_id": second["id"]}}
        },
        headers=shop.tenant.admin,
    )
    body = problem(response, 400, "rule.condition.segment_id")
    assert "cycle" in body["errors"][0]["message"]
    unchanged = await shop.client.get(f"/api/v1/segments/{first['id']}", headers=shop.tenant.admin)
    assert unchanged.json()["version"] == 1
    # A segment another one names cannot be deleted.
    refused = await shop.client.delete(f"/api/v1/segments/{first['id']}", headers=shop.tenant.admin)
    problem(refused, 409)


async def test_conjunctive_form_validation_and_warnings(shop: Shop) -> None:
    response = await shop.client.post(
        "/api/v1/segments/validate",
        json={"rule": [["plan eq pro", "plan eq team"], ["age gte 18"]]},
        headers=shop.tenant.admin,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rule"] == {
        "type": "all",
        "conditions": [
            {
                "type": "any",
                "conditions": [
                    {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"},
                    {"type": "trait", "trait": "plan", "operator": "eq", "value": "team"},
                ],
            },
            {"type": "trait", "trait": "age", "operator": "gte", "value": 18},
        ],
    }
    # Nobody has these traits yet: a warning per node, not an error.
    assert {w["field"] for w in body["warnings"]} == {
        "rule.conditions.0.conditions.0.trait",
        "rule.conditions.0.conditions.1.trait",
        "rule.conditions.1.trait",
    }


async def without_hourly_recompute(shop: Shop) -> None:
    """Drop the workspace's hourly recompute, so that only real-time work moves anyone."""
    async with shop.database.write_session() as session:
        await session.execute(
            delete(RecurringJob).where(RecurringJob.workspace_id == shop.tenant.id)
        )
        await session.commit()


async def test_realtime_entry_and_exit_emit_events(shop: Shop) -> None:
    now = shop.clock.now()
    segment = await shop.create(BUYERS)
    await shop.run()  # the baseline recompute: nobody yet
    await without_hourly_recompute(shop)
    await shop.send(order("ada", now - timedelta(days=3)))
    assert await shop.members(segment["id"]) == set()
    await shop.send(order("ada", now - timedelta(days=1)))
    ada = await shop.profile_id("ada")
    assert await shop.members(segment["id"]) == {ada}
    entered = await shop.emitted("Segment Entered")
    assert entered == [
        {
            "user_id": "ada",
            "properties": {
                "segment_id": segment["id"],
                "segment_name": "Buyers",
                "profile_id": ada,
            },
        }
    ]
    memberships = await shop.client.get(
        f"/api/v1/profiles/{ada}/segments", headers=shop.tenant.admin
    )
    assert [m["segment_id"] for m in memberships.json()] == [segment["id"]]
    # 27 days after the first order it leaves the 30-day window: a scheduled job, not a scan,
    # takes ada out at that moment.
    shop.clock.advance(timedelta(days=26, hours=23))
    await shop.run()
    assert await shop.members(segment["id"]) == {ada}
    shop.clock.advance(timedelta(hours=1, seconds=1))
    await shop.run()
    assert await shop.members(segment["id"]) == set()
    exited = await shop.emitted("Segment Exited")
    assert [e["properties"]["segment_id"] for e in exited] == [segment["id"]]
    # Their messageIds are the instant first (then what changed), so they sort by time.
    ids = [(await shop.message_ids(name))[0] for name in ("Segment Entered", "Segment Exited")]
    assert ids == sorted(ids)
    assert ids[1] == f"clarion:{micros(shop.clock.now())}:Segment Exited:{segment['id']}:{ada}"
    history = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/changes", headers=shop.tenant.admin
    )
    assert [(c["change"], c["cause"]) for c in history.json()["items"]] == [
        ("exited", "schedule"),
        ("entered", "realtime"),
    ]


async def test_trait_changes_move_profiles_and_recompute_agrees(shop: Shop) -> None:
    segment = await shop.create(
        {"type": "trait", "trait": "plan", "operator": "in", "value": ["pro", "team"]},
        name="Paying",
    )
    await shop.run()
    await shop.send(
        {"type": "identify", "userId": "bo", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "cy", "traits": {"plan": "free"}},
    )
    bo = await shop.profile_id("bo")
    assert await shop.members(segment["id"]) == {bo}
    recomputed = await shop.client.post(
        f"/api/v1/segments/{segment['id']}/recompute", headers=shop.tenant.admin
    )
    assert recomputed.status_code == 200, recomputed.text
    assert recomputed.json() | {"at": None} == {
        "segment_id": segment["id"],
        "size": 1,
        "entered": 0,
        "exited": 0,
        "at": None,
    }
    await shop.send({"type": "identify", "userId": "bo", "traits": {"plan": "free"}})
    assert await shop.members(segment["id"]) == set()
    sizes = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/sizes", headers=shop.tenant.admin
    )
    # The baseline and the recompute.
    assert sorted((s["size"], s["entered"]) for s in sizes.json()) == [(0, 0), (1, 0)]


async def test_preview_explain_members_and_export(shop: Shop) -> None:
    now = shop.clock.now()
    await shop.send(
        order("dee", now - timedelta(days=2), 40.0),
        order("dee", now - timedelta(days=1), 70.0),
        order("eli", now - timedelta(days=1), 5.0),
    )
    rule = {
        "type": "aggregate",
        "event": "Order Completed",
        "property": "revenue",
        "function": "sum",
        "operator": "gte",
        "value": 100,
        "window": {"last_days": 30},
    }
    preview = await shop.client.post(
        "/api/v1/segments/preview", json={"rule": rule}, headers=shop.tenant.admin
    )
    dee = await shop.profile_id("dee")
    assert preview.json()["count"] == 1
    assert preview.json()["sample"] == [dee]
    segment = await shop.create(rule, name="Big spenders")
    await shop.run()
    assert await shop.members(segment["id"]) == {dee}
    explained = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/explain",
        params={"profile_id": dee},
        headers=shop.tenant.admin,
    )
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["holds"] is True and body["member"] is True
    assert body["rule"]["holds"] is True
    assert body["rule"]["observed"] == 110
    exported = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/members.csv", headers=shop.tenant.admin
    )
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["profile_id"], r["user_id"]) for r in rows] == [(dee, "dee")]


async def test_members_page_by_profile_and_refuse_a_cursor_not_ours(shop: Shop) -> None:
    now = shop.clock.now()
    await shop.send(*(order(name, now - timedelta(days=1), 150.0) for name in ("fay", "gus")))
    segment = await shop.create({**BUYERS, "count": 1})
    await shop.run()
    path = f"/api/v1/segments/{segment['id']}/members"
    first = (await shop.client.get(path, params={"limit": 1}, headers=shop.tenant.admin)).json()
    second = await shop.client.get(
        path, params={"limit": 1, "cursor": first["next_cursor"]}, headers=shop.tenant.admin
    )
    pages = [first["items"], second.json()["items"]]
    expected = sorted([await shop.profile_id("fay"), await shop.profile_id("gus")])
    assert [item["profile_id"] for page in pages for item in page] == expected
    assert second.json()["next_cursor"] is None
    for cursor in (encode_cursor("not a uuid"), encode_cursor(7), "%%%"):
        refused = await shop.client.get(path, params={"cursor": cursor}, headers=shop.tenant.admin)
        problem(refused, 400, "cursor")


async def test_numbers_past_what_a_sum_can_hold_are_left_out_of_sums_and_averages(
    shop: Shop,
) -> None:
    # Two orders of 1e308 summed past any double: the recompute's and the preview's cast
    # failed on PostgreSQL (a 500), and the real-time sum's partials overflowed.
    now = shop.clock.now()
    await shop.send(
        order("huge", now - timedelta(days=2), 1e308),
        order("huge", now - timedelta(days=1), 1e308),
        order("huge", now - timedelta(hours=1), 5.0),
    )
    huge = await shop.profile_id("huge")
    aggregate = {"type": "aggregate", "event": "Order Completed", "property": "revenue"}
    cases = [
        ({"function": "sum", "operator": "eq", "value": 5}, {huge}),
        ({"function": "avg", "operator": "eq", "value": 5}, {huge}),
        ({"function": "sum", "operator": "eq", "value": 5, "window": {"last_days": 7}}, {huge}),
        ({"function": "max", "operator": "gte", "value": 1e308}, {huge}),
        ({"function": "min", "operator": "eq", "value": 5}, {huge}),
    ]
    for number, (fields, members) in enumerate(cases):
        rule = {**aggregate, **fields}
        preview = await shop.client.post(
            "/api/v1/segments/preview", json={"rule": rule}, headers=shop.tenant.admin
        )
        assert preview.status_code == 200, preview.text
        assert preview.json()["count"] == len(members), fields
        segment = await shop.create(rule, name=f"Huge {number}")
        await shop.run()
        assert await shop.members(segment["id"]) == members, fields
    await shop.send(order("huge", now, 1e308))  # real time, kept event by event
    for segment_number in range(len(cases)):
        found = await shop.client.get("/api/v1/segments", headers=shop.tenant.admin)
        named = {s["name"]: s["id"] for s in found.json()["items"]}
        assert await shop.members(named[f"Huge {segment_number}"]) == {huge}


async def test_another_workspace_sees_nothing(shop: Shop, other_tenant: Tenant) -> None:
    segment = await shop.create({"type": "trait", "trait": "plan", "operator": "exists"})
    for method, path in [
        ("GET", f"/api/v1/segments/{segment['id']}"),
        ("PATCH", f"/api/v1/segments/{segment['id']}"),
        ("DELETE", f"/api/v1/segments/{segment['id']}"),
        ("GET", f"/api/v1/segments/{segment['id']}/members"),
        ("GET", f"/api/v1/segments/{segment['id']}/members.csv"),
        ("GET", f"/api/v1/segments/{segment['id']}/changes"),
        ("GET", f"/api/v1/segments/{segment['id']}/sizes"),
        ("POST", f"/api/v1/segments/{segment['id']}/recompute"),
    ]:
        response = await shop.client.request(
            method, path, headers=other_tenant.admin, json={} if method == "PATCH" else None
        )
        problem(response, 404)
    referencing = await shop.client.post(
        "/api/v1/segments",
        json={"name": "Theirs", "rule": {"type": "segment", "segment_id": segment["id"]}},
        headers=other_tenant.admin,
    )
    problem(referencing, 400, "rule.segment_id")
    async with shop.database.read_session() as session:
        names = (await session.scalars(select(Segment.name))).all()
    assert "Theirs" not in names


async def test_ready_made_segments(shop: Shop) -> None:
    listed = await shop.client.get("/api/v1/segments/templates", headers=shop.tenant.admin)
    keys = {t["key"] for t in listed.json()}
    assert {"high_value", "at_risk", "cart_abandoners", "new_customers"} <= keys
    assert {"birthdays_this_week", "rfm_champions", "rfm_hibernating"} <= keys
    made = await shop.client.post(
        "/api/v1/segments/templates/new_customers", headers=shop.tenant.admin
    )
    assert made.status_code == 201, made.text
    again = await shop.client.post(
        "/api/v1/segments/templates/new_customers", headers=shop.tenant.admin
    )
    problem(again, 409)
    problem(
        await shop.client.post("/api/v1/segments/templates/nope", headers=shop.tenant.admin), 404
    )
    await shop.send({"type": "identify", "userId": "fay", "traits": {"name": "Fay"}})
    fay = await shop.profile_id("fay")
    assert await shop.members(made.json()["id"]) == {fay}


async def test_a_recompute_and_a_lapse_deciding_the_same_exit_record_it_once(shop: Shop) -> None:
    now = shop.clock.now()
    segment = await shop.create(BUYERS)
    await shop.send(order("gus", now - timedelta(days=2)), order("gus", now - timedelta(days=1)))
    assert len(await shop.members(segment["id"])) == 1
    # Past the window, the lapse job and the hourly recompute are both due and run at once.
    shop.clock.advance(timedelta(days=29))
    await shop.run()
    assert await shop.members(segment["id"]) == set()
    history = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/changes", headers=shop.tenant.admin
    )
    assert [c["change"] for c in history.json()["items"]] == ["exited", "entered"]
    assert len(await shop.emitted("Segment Exited")) == 1
    read = await shop.client.get(f"/api/v1/segments/{segment['id']}", headers=shop.tenant.admin)
    assert read.json()["member_count"] == 0


async def test_a_csv_import_moves_profiles_in_and_out(shop: Shop) -> None:
    segment = await shop.create({"type": "trait", "trait": "vip", "operator": "eq", "value": True})
    await shop.run()

    async def upload(body: str) -> None:
        response = await shop.client.post(
            "/api/v1/profiles/imports",
            content=body.encode(),
            headers={**shop.tenant.admin, "Content-Type": "text/csv"},
        )
        assert response.status_code == 200, response.text
        await shop.run()

    await upload("user_id,vip:bool\nhal,true\nivy,false\n")
    hal = await shop.profile_id("hal")
    assert await shop.members(segment["id"]) == {hal}
    await upload("user_id,vip:bool\nhal,false\n")
    assert await shop.members(segment["id"]) == set()


async def test_merges_and_unmerges_move_memberships(shop: Shop) -> None:
    now = shop.clock.now()
    rule = {"type": "event", "event": "Order Completed", "operator": "gte", "count": 2}
    segment = await shop.create(rule, name="Repeat buyers")
    await shop.run()
    device_order = {**order("x", now - timedelta(days=1)), "anonymousId": "dev-7"}
    del device_order["userId"]
    await shop.send(order("kim", now - timedelta(days=2)), device_order)
    assert await shop.members(segment["id"]) == set()
    # An alias merges the device's profile into kim's: two orders now.
    await shop.send({"type": "alias", "userId": "kim", "previousId": "dev-7"})
    kim = await shop.profile_id("kim")
    assert await shop.members(segment["id"]) == {kim}
    merges = await shop.client.get(f"/api/v1/profiles/{kim}/merges", headers=shop.tenant.admin)
    [merge] = [m for m in merges.json()["items"] if m["status"] == "merged"]
    undone = await shop.client.post(
        f"/api/v1/profiles/{kim}/merges/{merge['id']}/undo", headers=shop.tenant.admin
    )
    assert undone.status_code == 200, undone.text
    await shop.run()
    assert await shop.members(segment["id"]) == set()


async def test_a_lapse_can_also_bring_a_profile_in(shop: Shop) -> None:
    now = shop.clock.now()
    lapsed = {
        "type": "all",
        "conditions": [
            {"type": "event", "event": "Order Completed", "operator": "gte", "count": 1},
            {**BUYERS, "operator": "eq", "count": 0, "window": {"last_days": 2}},
        ],
    }
    segment = await shop.create(lapsed, name="Lapsed")
    await shop.run()
    await without_hourly_recompute(shop)
    await shop.send(order("lou", now - timedelta(hours=30)))
    assert await shop.members(segment["id"]) == set()
    shop.clock.advance(timedelta(hours=18, seconds=1))  # the order is now 2 days old
    await shop.run()
    lou = await shop.profile_id("lou")
    assert await shop.members(segment["id"]) == {lou}
    entered = await shop.emitted("Segment Entered")
    assert [e["user_id"] for e in entered] == ["lou"]


async def test_member_exports_keep_formulas_from_running_in_spreadsheets(shop: Shop) -> None:
    formula = '=HYPERLINK("http://evil.example","click")'
    await shop.send({"type": "identify", "userId": formula, "traits": {"plan": "pro"}})
    segment = await shop.create(
        {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}
    )
    await shop.run()
    exported = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/members.csv", headers=shop.tenant.admin
    )
    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["user_id"] == "'" + formula


async def test_a_new_rule_is_recomputed_as_a_silent_baseline(shop: Shop) -> None:
    await shop.send(
        {"type": "identify", "userId": "max", "traits": {"plan": "pro", "age": 30}},
        {"type": "identify", "userId": "sue", "traits": {"plan": "team", "age": 40}},
    )
    segment = await shop.create(
        {"type": "trait", "trait": "plan", "operator": "eq", "value": "team"}
    )
    adults = await shop.create(
        {
            "type": "all",
            "conditions": [
                {"type": "segment", "segment_id": segment["id"]},
                {"type": "trait", "trait": "age", "operator": "gte", "value": 18},
            ],
        },
        name="Adult team",
    )
    await shop.run()
    max_, sue = await shop.profile_id("max"), await shop.profile_id("sue")
    assert await shop.members(segment["id"]) == {sue}
    assert await shop.members(adults["id"]) == {sue}
    first = await shop.client.get(
        f"/api/v1/segments/{segment['id']}/changes", headers=shop.tenant.admin
    )
    assert first.json()["items"] == []  # a new segment's baseline: one size row
    changed = await shop.client.patch(
        f"/api/v1/segments/{segment['id']}",
        json={"rule": {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}},
        headers=shop.tenant.admin,
    )
    assert changed.json()["version"] == 2
    await shop.run()
    assert await shop.members(segment["id"]) == {max_}
    # The segment naming it follows at once, without waiting for the hourly recompute.
    assert await shop.members(adults["id"]) == {max_}
    # No events (a rule change starts no journeys), but history says who the change moved.
    assert await shop.emitted("Segment Entered") == []
    assert await shop.emitted("Segment Exited") == []
    for moved in (segment, adults):
        history = await shop.client.get(
            f"/api/v1/segments/{moved['id']}/changes", headers=shop.tenant.admin
        )
        assert sorted(
            (item["profile_id"], item["change"], item["cause"]) for item in history.json()["items"]
        ) == sorted([(max_, "entered", "rule_changed"), (sue, "exited", "rule_changed")])


async def test_segment_events_are_on_the_timeline_but_not_activity(shop: Shop) -> None:
    """`Segment Entered` lands on the profile's timeline, yet moves neither its last-seen
    time nor its computed event counts: Clarion did that, not the customer."""
    now = shop.clock.now()
    segment = await shop.create(BUYERS)
    await shop.run()
    await without_hourly_recompute(shop)
    await shop.send(order("ada", now - timedelta(days=2)), order("ada", now - timedelta(days=1)))
    ada = await shop.profile_id("ada")
    assert await shop.members(segment["id"]) == {ada}
    profile = (await shop.client.get(f"/api/v1/profiles/{ada}", headers=shop.tenant.admin)).json()
    seen = datetime.fromisoformat(profile["computed"]["last_seen_at"].replace("Z", "+00:00"))
    assert abs(seen - (now - timedelta(days=1))) < timedelta(milliseconds=1)
    assert profile["computed"]["event_counts"] == {"Order Completed": 2}
    timeline = await shop.timeline(ada)
    assert timeline == ["Order Completed", "Order Completed", "Segment Entered"]


async def test_a_new_profile_is_evaluated_against_every_segment(shop: Shop) -> None:
    """A customer's first event counts for segments it does not mention: "not on the free
    plan" holds for someone who has no plan at all."""
    segment = await shop.create(
        {
            "type": "not",
            "condition": {"type": "trait", "trait": "plan", "operator": "eq", "value": "free"},
        },
        name="Not free",
    )
    await shop.run()
    await without_hourly_recompute(shop)
    await shop.send({"type": "track", "event": "Page Viewed", "userId": "bo"})
    bo = await shop.profile_id("bo")
    assert await shop.members(segment["id"]) == {bo}
    # An event no segment reads leaves the profile alone: nothing to re-evaluate.
    async with shop.database.read_session() as session:
        before = await session.scalar(
            select(ProfileSegmentState.updated_at).where(
                ProfileSegmentState.profile_id == uuid.UUID(bo)
            )
        )
    shop.clock.advance(timedelta(minutes=5))
    await shop.send({"type": "track", "event": "Page Viewed", "userId": "bo"})
    async with shop.database.read_session() as session:
        after = await session.scalar(
            select(ProfileSegmentState.updated_at).where(
                ProfileSegmentState.profile_id == uuid.UUID(bo)
            )
        )
    assert before is not None and after == before
    assert await shop.members(segment["id"]) == {bo}


def entered(segment_id: int) -> dict[str, Any]:
    """Those who entered the segment: a rule on Clarion's own `Segment Entered` events."""
    where = {"type": "property", "property": "segment_id", "operator": "eq", "value": segment_id}
    return {
        "type": "event",
        "event": "Segment Entered",
        "where": where,
        "operator": "gte",
        "count": 1,
    }


async def chain_of_entries(
    shop: Shop, user_id: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Buyers, those who entered Buyers, those who entered that; then two orders of
    `user_id` stored, not yet processed."""
    now = shop.clock.now()
    buyers = await shop.create(BUYERS)
    followers = await shop.create(entered(buyers["id"]), name="Entered Buyers")
    chained = await shop.create(entered(followers["id"]), name="Entered Entered Buyers")
    await shop.run()
    await without_hourly_recompute(shop)
    orders = [order(user_id, now - timedelta(days=2)), order(user_id, now - timedelta(days=1))]
    response = await shop.client.post("/v1/batch", json={"batch": orders}, auth=shop.tenant.writer)
    assert response.status_code == 200
    return buyers, followers, chained


async def queued_processing(shop: Shop) -> int:
    async with shop.database.read_session() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.workspace_id == shop.tenant.id, Job.kind == PROCESS_EVENTS)
        )
        return int(found or 0)


async def test_segment_events_are_applied_in_the_transaction_that_decided_them(
    shop: Shop,
) -> None:
    """Entering a segment is on the timeline, and moves segments of those who entered it,
    in the run that processed the customer's event: no processing job per `Segment
    Entered`, and one chain of segments settles at once."""
    buyers, followers, chained = await chain_of_entries(shop, "ada")
    claimed = await shop.worker._maintain_and_claim()  # one run: the customer's events
    assert [job.kind for job in claimed] == [PROCESS_EVENTS]
    await shop.worker._execute(claimed[0])

    ada = await shop.profile_id("ada")
    for segment in (buyers, followers, chained):
        assert await shop.members(segment["id"]) == {ada}
    assert await queued_processing(shop) == 0
    entries = await shop.emitted("Segment Entered")
    assert [e["properties"]["segment_id"] for e in entries] == [
        buyers["id"],
        followers["id"],
        chained["id"],
    ]
    timeline = await shop.timeline(ada)
    assert timeline == ["Order Completed"] * 2 + ["Segment Entered"] * 3


async def test_segment_events_past_the_last_round_are_left_to_processing_jobs(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "OWN_EVENT_ROUNDS", 1)
    buyers, followers, chained = await chain_of_entries(shop, "bo")
    claimed = await shop.worker._maintain_and_claim()
    await shop.worker._execute(claimed[0])

    bo = await shop.profile_id("bo")
    assert await shop.members(buyers["id"]) == {bo}
    assert await shop.members(followers["id"]) == {bo}  # the one round
    assert await shop.members(chained["id"]) == set()
    assert await queued_processing(shop) == 1  # entering "Entered Buyers", not lost
    await shop.run()
    assert await shop.members(chained["id"]) == {bo}
    assert len(await shop.emitted("Segment Entered")) == 3
