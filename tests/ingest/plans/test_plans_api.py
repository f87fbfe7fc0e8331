"""Tracking plans through the management API: CRUD, scopes, and bad input changing nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans.models import TrackingPlan
from clarion.ingest.plans.secrets import HeaderVault
from tests.conftest import Tenant, problem
from tests.ingest.plans.support import create_plan

URL = "/api/v1/tracking-plans"
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"revenue": {"type": "number"}, "currency": {"type": "string"}},
    "required": ["revenue"],
}


async def plans_of(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    response = await client.get(URL, headers=tenant.reader)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_create_read_update_delete(client: httpx.AsyncClient, tenant: Tenant) -> None:
    plan = await create_plan(
        client,
        tenant,
        source_ids=[str(tenant.source_id)],
        invalid_events="block",
        events=[{"type": "track", "name": "Order Completed", "json_schema": ORDER_SCHEMA}],
    )
    assert plan["version"] == 1
    assert plan["default"] is True
    assert plan["source_ids"] == [str(tenant.source_id)]
    assert plan["unplanned_events"] == "warn"
    assert plan["events"][0]["json_schema"] == ORDER_SCHEMA

    read = await client.get(f"{URL}/{plan['id']}", headers=tenant.reader)
    assert read.json() == plan

    body = {"name": "Renamed", "unplanned_events": "block", "events": []}
    updated = (await client.put(f"{URL}/{plan['id']}", json=body, headers=tenant.admin)).json()
    assert updated["version"] == 2
    assert updated["name"] == "Renamed"
    assert updated["source_ids"] == []
    assert updated["default"] is False
    assert await plans_of(client, tenant) == [updated]

    deleted = await client.delete(f"{URL}/{plan['id']}", headers=tenant.admin)
    assert deleted.status_code == 204
    assert await plans_of(client, tenant) == []
    problem(await client.get(f"{URL}/{plan['id']}", headers=tenant.admin), 404)


async def test_one_default_plan_per_workspace(client: httpx.AsyncClient, tenant: Tenant) -> None:
    first = await create_plan(client, tenant, name="First")
    second = await create_plan(client, tenant, name="Second")
    defaults = {p["name"]: p["default"] for p in await plans_of(client, tenant)}
    assert defaults == {"First": False, "Second": True}
    assert first["id"] != second["id"]


async def test_read_only_keys_read_but_never_write(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    plan = await create_plan(client, tenant)
    problem(await client.post(URL, json={"name": "x"}, headers=tenant.reader), 403)
    problem(await client.put(f"{URL}/{plan['id']}", json={"name": "x"}, headers=tenant.reader), 403)
    problem(await client.delete(f"{URL}/{plan['id']}", headers=tenant.reader), 403)
    problem(await client.get(URL), 401)
    assert await plans_of(client, tenant) == [plan]


def _step(**overrides: Any) -> dict[str, Any]:
    step = {
        "name": "product",
        "kind": "graphql",
        "url": "http://127.0.0.1:9/graphql",
        "query": "query($sku: String!) { product(sku: $sku) { price title } }",
        "variables": {"sku": "properties.sku"},
        "mapping": {"product.price": "price"},
    }
    return {**step, **overrides}


def _rule(**overrides: Any) -> dict[str, Any]:
    return {"type": "track", "name": "Product Viewed", **overrides}


BAD_BODIES = [
    ({"events": [_rule(json_schema={"type": "nope"})]}, 400, "events.0.json_schema"),
    ({"events": [_rule(json_schema={"minLength": -1})]}, 400, "events.0.json_schema"),
    (
        {"events": [_rule(json_schema={"$ref": "https://example.com/s.json"})]},
        400,
        "events.0.json_schema",
    ),
    (
        {"events": [_rule(json_schema={"$schema": "http://json-schema.org/draft-07/schema#"})]},
        400,
        "events.0.json_schema",
    ),
    ({"unplanned_events": "ignore"}, 422, "unplanned_events"),
    ({"invalid_events": "drop"}, 422, "invalid_events"),
    ({"events": [{"type": "track"}]}, 400, "events.0.name"),
    ({"events": [{"type": "identify", "name": "x"}]}, 400, "events.0.name"),
    ({"events": [{"type": "alias"}]}, 422, "events.0.type"),
    ({"events": [_rule(), _rule()]}, 400, "events.1.name"),
    (
        {"events": [_rule(enrichments=[_step(mapping={"product.weight": "weight"})])]},
        400,
        "events.0.enrichments.0.mapping.product.weight",
    ),
    (
        {"events": [_rule(enrichments=[_step(mapping={"product..price": "price"})])]},
        400,
        "events.0.enrichments.0.mapping.product..price",
    ),
    (
        {"events": [_rule(enrichments=[_step(mapping={"product.price.cents": "c"})])]},
        400,
        "events.0.enrichments.0.mapping.product.price.cents",
    ),
    (
        {"events": [_rule(enrichments=[_step(variables={"sku": "props.sku"})])]},
        400,
        "events.0.enrichments.0.variables.sku",
    ),
    (
        {"events": [_rule(enrichments=[_step(variables={})])]},
        400,
        "events.0.enrichments.0.variables",
    ),
    (
        {"events": [_rule(enrichments=[_step(query="{ product(sku: 1) { price }")])]},
        400,
        "events.0.enrichments.0.query",
    ),
    (
        {"events": [_rule(enrichments=[_step(kind="http", query=None, url="ftp://x/y")])]},
        400,
        "events.0.enrichments.0.url",
    ),
    (
        {"events": [_rule(enrichments=[_step(timeout_s=60)])]},
        422,
        "events.0.enrichments.0.timeout_s",
    ),
    (
        {"events": [_rule(enrichments=[_step(mapping={"product.price": "a.b"})])]},
        400,
        "events.0.enrichments.0.mapping",
    ),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], status: int, field: str
) -> None:
    plan = await create_plan(client, tenant, name="Existing")
    full = {"name": "New", **body}
    problem(await client.post(URL, json=full, headers=tenant.admin), status, field)
    problem(await client.put(f"{URL}/{plan['id']}", json=full, headers=tenant.admin), status, field)
    assert await plans_of(client, tenant) == [plan]


async def test_sources_must_be_the_workspaces_and_free(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    plan = await create_plan(client, tenant, name="Web", source_ids=[str(tenant.source_id)])
    foreign = {"name": "Other", "source_ids": [str(other_tenant.source_id)]}
    problem(await client.post(URL, json=foreign, headers=tenant.admin), 404, "source_ids.0")
    taken = {"name": "Other", "source_ids": [str(tenant.source_id)]}
    problem(await client.post(URL, json=taken, headers=tenant.admin), 409, "source_ids.0")
    problem(await client.post(URL, json={"name": "Web"}, headers=tenant.admin), 409, "name")
    assert await plans_of(client, tenant) == [plan]
    # Its own plan may keep the source when updated.
    body = {"name": "Web", "source_ids": [str(tenant.source_id)]}
    assert (await client.put(f"{URL}/{plan['id']}", json=body, headers=tenant.admin)).is_success


async def test_graphql_mappings_may_follow_aliases_fragments_and_lists(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = """
    query Lookup($sku: String!, $limit: Int = 3) {
      item: product(sku: $sku) @include(if: true) { ... on Product { price } tags }
      other: product(sku: "B2") { ...More }
    }
    fragment More on Product { title }
    """
    step = _step(
        query=query,
        mapping={"item.price": "price", "item.tags.0": "tag", "other.title": "other"},
    )
    await create_plan(client, tenant, events=[_rule(enrichments=[step])])


async def test_header_values_are_never_shown_and_survive_a_round_trip(
    client: httpx.AsyncClient, database: Database, settings: Settings, tenant: Tenant
) -> None:
    step = {
        "name": "catalog",
        "kind": "http",
        "url": "https://catalog.example/products/{sku}",
        "variables": {"sku": "properties.sku"},
        "headers": {"Authorization": "Bearer s3cret-token"},
        "mapping": {"price": "price"},
    }
    body = {"name": "Enriched", "events": [{"name": "Product Viewed", "enrichments": [step]}]}
    created = await client.post(URL, json=body, headers=tenant.admin)
    assert created.status_code == 201, created.text
    plan = created.json()
    for headers in (tenant.admin, tenant.reader):
        shown = (await client.get(f"{URL}/{plan['id']}", headers=headers)).text
        assert "s3cret-token" not in shown and "<hidden>" in shown

    # Read, change something else, send back: the token is kept.
    edited = {k: plan[k] for k in ("name", "default", "source_ids", "events")}
    edited["name"] = "Enriched v2"
    updated = await client.put(f"{URL}/{plan['id']}", json=edited, headers=tenant.admin)
    assert updated.status_code == 200, updated.text
    async with database.read_session() as session:
        stored = await session.get(TrackingPlan, plan["id"])
        assert stored is not None
        [kept] = stored.events[0]["enrichments"][0]["headers"].values()
    assert HeaderVault(settings.resolved_secret_key()).open(kept) == "Bearer s3cret-token"
    assert "s3cret-token" not in str(stored.events)

    # The placeholder for a header that was never stored is refused.
    edited["events"][0]["enrichments"][0]["headers"]["X-Api-Key"] = "<hidden>"
    refused = await client.put(f"{URL}/{plan['id']}", json=edited, headers=tenant.admin)
    problem(refused, 400, "events.0.enrichments.0.headers.X-Api-Key")
    # ... and in a new plan, where nothing is stored.
    new = {**edited, "name": "Another", "default": False, "source_ids": []}
    created_hidden = await client.post(URL, json=new, headers=tenant.admin)
    problem(created_hidden, 400, "events.0.enrichments.0.headers.Authorization")
