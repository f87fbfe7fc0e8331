"""Reviewing events: modes, which plan applies, recording violations once, reading them."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from clarion.core.database import Database
from clarion.ingest.plans import Review, TrackingPlans
from clarion.ingest.plans.models import TrackingViolation
from clarion.workspaces import service as workspaces
from tests.conftest import Tenant, problem
from tests.ingest.plans.support import WHEN, create_plan, event

VIOLATIONS = "/api/v1/tracking-plans/violations"
ORDER = {
    "type": "track",
    "name": "Order Completed",
    "json_schema": {
        "type": "object",
        "properties": {"revenue": {"type": "number"}, "email": {"format": "email"}},
        "required": ["revenue"],
    },
}


async def record(database: Database, plans: TrackingPlans, review: Review) -> None:
    async with database.write_session() as session:
        await plans.record(session, review)
        await session.commit()


async def violations(
    client: httpx.AsyncClient, tenant: Tenant, **query: Any
) -> list[dict[str, Any]]:
    response = await client.get(VIOLATIONS, params=query, headers=tenant.reader)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_warn_keeps_events_and_records_why(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, database: Database
) -> None:
    await create_plan(client, tenant, events=[ORDER])
    batch = [
        event(tenant, 1, name="Order Completed", properties={"revenue": 10}),
        event(tenant, 2, name="Order Completed", properties={"revenue": "ten", "email": "x"}),
        event(tenant, 3, name="Signed Up"),
    ]
    review = await plans.review(tenant.id, batch)
    assert review.events == batch
    assert review.blocked == []
    await record(database, plans, review)

    found = {v["event_id"]: v for v in await violations(client, tenant)}
    assert set(found) == {2, 3}
    assert found[2]["kind"] == "invalid"
    assert found[2]["action"] == "warned"
    assert found[2]["message_id"] == "m-2"
    assert found[2]["event_name"] == "Order Completed"
    assert [e["path"] for e in found[2]["errors"]] == ["$.properties.email", "$.properties.revenue"]
    assert "is not of type 'number'" in found[2]["errors"][1]["message"]
    assert found[3]["kind"] == "unplanned"
    assert found[3]["errors"] == [
        {"path": "$.event", "message": "'Signed Up' is not in the tracking plan"}
    ]


async def test_block_leaves_events_out_and_allow_records_nothing(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, database: Database
) -> None:
    await create_plan(
        client, tenant, events=[ORDER], unplanned_events="allow", invalid_events="block"
    )
    good = event(tenant, 1, name="Order Completed", properties={"revenue": 1})
    bad = event(tenant, 2, name="Order Completed", properties={})
    unplanned = event(tenant, 3, name="Anything")
    review = await plans.review(tenant.id, [good, bad, unplanned])
    assert review.events == [good, unplanned]
    assert review.blocked == [2]
    await record(database, plans, review)
    [only] = await violations(client, tenant)
    assert (only["event_id"], only["kind"], only["action"]) == (2, "invalid", "blocked")
    assert only["errors"] == [
        {"path": "$.properties", "message": "'revenue' is a required property"}
    ]


async def test_unplanned_block(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans
) -> None:
    await create_plan(client, tenant, events=[ORDER], unplanned_events="block")
    review = await plans.review(
        tenant.id, [event(tenant, 1, name="Nope"), event(tenant, 2, type="alias")]
    )
    assert [e.id for e in review.events] == [2]
    assert [(v.kind, v.action) for v in review.violations] == [("unplanned", "blocked")]


async def test_a_sources_plan_wins_over_the_default_and_no_plan_means_no_checks(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, database: Database
) -> None:
    async with database.write_session() as session:
        app_source = await workspaces.create_source(
            session, workspace_id=tenant.id, name="App", now=WHEN
        )
        await session.commit()
    strict = {"unplanned_events": "block", "events": [ORDER]}
    await create_plan(
        client, tenant, name="App plan", default=False, source_ids=[str(app_source.id)], **strict
    )
    on_app = event(tenant, 1, name="Other", source_id=app_source.id)
    on_web = event(tenant, 2, name="Other")
    review = await plans.review(tenant.id, [on_app, on_web])
    assert [e.id for e in review.events] == [2]  # the web source has no plan: no checks

    await create_plan(client, tenant, name="Default", unplanned_events="warn")
    review = await plans.review(tenant.id, [on_app, on_web])
    assert [e.id for e in review.events] == [2]
    assert [(v.event_id, v.action) for v in review.violations] == [(1, "blocked"), (2, "warned")]


async def test_identify_traits_and_page_rules(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans
) -> None:
    email = {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    path = {"type": "object", "required": ["path"]}
    checkout = {"type": "object", "required": ["step"]}
    await create_plan(
        client,
        tenant,
        invalid_events="block",
        unplanned_events="block",
        events=[
            {"type": "identify", "json_schema": email},
            {"type": "page", "json_schema": path},
            {"type": "page", "name": "Checkout", "json_schema": checkout},
        ],
    )
    batch = [
        event(tenant, 1, type="identify", traits={"email": "a@b.c"}),
        event(tenant, 2, type="identify", traits={"name": "no email"}),
        event(tenant, 3, type="page", name="Home", properties={"path": "/"}),
        event(tenant, 4, type="page", name="Checkout", properties={"path": "/c"}),
        event(tenant, 5, type="screen", name="Home"),  # no screen rule: not checked
        event(tenant, 6, type="group", traits={}),  # no group rule: not checked
    ]
    review = await plans.review(tenant.id, batch)
    assert [e.id for e in review.events] == [1, 3, 5, 6]
    assert {v.event_id: v.errors[0].path for v in review.violations} == {
        2: "$.traits",
        4: "$.properties",
    }


async def test_recording_a_review_twice_writes_nothing_twice(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, database: Database
) -> None:
    await create_plan(client, tenant, events=[ORDER])
    batch = [event(tenant, 1, name="Unplanned"), event(tenant, 2, name="Order Completed")]
    first = await plans.review(tenant.id, batch)
    await record(database, plans, first)
    await record(database, plans, first)
    await record(database, plans, await plans.review(tenant.id, batch))  # re-run after a crash
    async with database.read_session() as session:
        count = await session.scalar(
            select(func.count()).where(TrackingViolation.workspace_id == tenant.id)
        )
    assert count == 2


async def test_validators_are_compiled_once_per_plan_version(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans
) -> None:
    plan = await create_plan(client, tenant, events=[ORDER])
    await plans.review(tenant.id, [event(tenant, 1, name="Order Completed")])
    compiled = plans._plans._compiled[(plan["id"], 1)]
    plans._plans.drop(tenant.id)  # a reload of an unchanged plan reuses the validators
    await plans.review(tenant.id, [event(tenant, 2, name="Order Completed")])
    assert plans._plans._compiled[(plan["id"], 1)] is compiled
    body = {"name": "Plan", "default": True, "events": []}
    await client.put(f"/api/v1/tracking-plans/{plan['id']}", json=body, headers=tenant.admin)
    review = await plans.review(tenant.id, [event(tenant, 3, name="Order Completed")])
    assert (plan["id"], 2) in plans._plans._compiled
    assert [v.kind for v in review.violations] == ["unplanned"]


async def test_violations_filter_and_page(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, database: Database
) -> None:
    await create_plan(client, tenant, events=[ORDER])
    batch = [event(tenant, i, name="Order Completed") for i in range(1, 6)]
    batch += [event(tenant, 6, name="Unplanned")]
    await record(database, plans, await plans.review(tenant.id, batch))

    assert len(await violations(client, tenant)) == 6
    assert [v["event_id"] for v in await violations(client, tenant, kind="unplanned")] == [6]
    assert len(await violations(client, tenant, event="Order Completed")) == 5
    assert await violations(client, tenant, kind="enrichment_failed") == []
    [recorded] = {v["created_at"] for v in await violations(client, tenant)}
    assert len(await violations(client, tenant, since=recorded)) == 6
    assert await violations(client, tenant, until=recorded) == []

    seen: list[int] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(VIOLATIONS, params=query, headers=tenant.admin)).json()
        seen += [v["event_id"] for v in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [1, 2, 3, 4, 5, 6]
    assert len(seen) == 6
    problem(
        await client.get(VIOLATIONS, params={"cursor": "nope"}, headers=tenant.admin), 400, "cursor"
    )
    problem(await client.get(VIOLATIONS, params={"kind": "bad"}, headers=tenant.admin), 422, "kind")


async def test_a_workspace_without_plans_passes_everything(
    tenant: Tenant, plans: TrackingPlans
) -> None:
    batch = [event(tenant, 1, name="Anything")]
    review = await plans.review(tenant.id, batch)
    assert review.events == batch
    assert review.violations == []
