"""Enrichment against real endpoints on loopback: a GraphQL API (ariadne) and plain JSON."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from clarion.core.clock import FrozenClock, SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import TrackingPlans
from clarion.ingest.plans.enrichment import BREAKER_FAILURES, MAX_CONCURRENT_CALLS
from tests.conftest import Tenant
from tests.ingest.plans.conftest import Stats
from tests.ingest.plans.support import WHEN, create_plan, event
from tests.support import free_port

PRODUCT_QUERY = "query($sku: String!) { product(sku: $sku) { price title tags } }"


def graphql_step(endpoints: str, **overrides: Any) -> dict[str, Any]:
    step = {
        "name": "catalog",
        "kind": "graphql",
        "url": f"{endpoints}/graphql/",
        "query": PRODUCT_QUERY,
        "variables": {"sku": "properties.sku"},
        "mapping": {"product.price": "price", "product.title": "title"},
        "timeout_s": 2,
    }
    return {**step, **overrides}


def http_step(url: str, **overrides: Any) -> dict[str, Any]:
    step = {"name": "http", "kind": "http", "url": url, "mapping": {"product.price": "price"}}
    step = {**step, **overrides}
    if "mapping" not in overrides and "name" in overrides:
        step["mapping"] = {"product.price": f"{overrides['name']}_price"}
    return step


async def plan_with(client: httpx.AsyncClient, tenant: Tenant, *steps: dict[str, Any]) -> None:
    rule = {"type": "track", "name": "Product Viewed", "enrichments": list(steps)}
    await create_plan(client, tenant, events=[rule])


def viewed(tenant: Tenant, event_id: int, **properties: Any) -> Any:
    return event(tenant, event_id, name="Product Viewed", properties=properties)


async def test_graphql_adds_properties_and_answers_are_cached(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, endpoints: str, stats: Stats
) -> None:
    await plan_with(client, tenant, graphql_step(endpoints))
    batch = [viewed(tenant, 1, sku="A1"), viewed(tenant, 2, sku="A1"), viewed(tenant, 3, sku="B2")]
    review = await plans.review(tenant.id, batch)
    assert [e.properties for e in review.events] == [
        {"sku": "A1", "price": 12.5, "title": "Mug"},
        {"sku": "A1", "price": 12.5, "title": "Mug"},
        {"sku": "B2", "price": 99.0, "title": "Lamp"},
    ]
    assert review.violations == []
    assert batch[0].properties == {"sku": "A1"}  # the input records are untouched
    assert stats.calls["graphql:A1"] == 1  # identical requests in a batch: one call

    await plans.review(tenant.id, [viewed(tenant, 4, sku="A1")])
    assert stats.calls["graphql:A1"] == 1  # answered from the cache


async def test_http_get_with_url_placeholders_and_post_with_a_json_body(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, endpoints: str
) -> None:
    get = http_step(
        f"{endpoints}/products/{{sku}}",
        variables={"sku": "properties.sku", "user": "user_id"},
        mapping={"product.title": "title", "asked.user": "asked_by"},
    )
    post = http_step(
        f"{endpoints}/lookup",
        name="geo",
        method="POST",
        variables={"ip": "context.ip"},
        mapping={"region": "region", "echo.ip": "ip"},
        headers={"X-Api-Key": "secret"},
    )
    await plan_with(client, tenant, get, post)
    record = event(
        tenant, 1, name="Product Viewed", properties={"sku": "B2"}, context={"ip": "10.0.0.1"}
    )
    [enriched] = (await plans.review(tenant.id, [record])).events
    assert enriched.properties == {
        "sku": "B2",
        "title": "Lamp",
        "asked_by": "u1",
        "region": "EU",
        "ip": "10.0.0.1",
    }


async def test_failures_are_recorded_and_the_event_kept_unchanged(
    client: httpx.AsyncClient,
    tenant: Tenant,
    plans: TrackingPlans,
    database: Database,
    endpoints: str,
) -> None:
    steps = [
        http_step(f"{endpoints}/slow", name="slow", timeout_s=0.3),
        http_step(f"http://127.0.0.1:{free_port()}/x", name="refused"),
        http_step(f"{endpoints}/broken", name="non-2xx"),
        http_step(f"{endpoints}/garbage", name="garbage"),
        graphql_step(
            endpoints, name="gql-errors", query="{ broken }", variables={}, mapping={"broken": "b"}
        ),
        graphql_step(endpoints, name="unknown-product", mapping={"product.price": "p"}),
    ]
    await plan_with(client, tenant, *steps)
    record = viewed(tenant, 1, sku="ZZ")
    review = await plans.review(tenant.id, [record])
    assert review.events == [record]
    [violation] = review.violations
    assert (violation.kind, violation.action) == ("enrichment_failed", "allowed")
    messages = sorted(error.message for error in violation.errors)
    expected = [
        "step 'garbage': the answer is not JSON",
        "step 'gql-errors': GraphQL errors: the resolver broke",
        "step 'non-2xx': the endpoint answered HTTP 503",
        "step 'refused': request failed (ConnectError",
        "step 'slow': no answer within 0.3 s",
        "step 'unknown-product': the answer has no value at 'product.price'",
    ]
    assert len(messages) == len(expected)
    for message, start in zip(messages, expected, strict=True):
        assert message.startswith(start), message

    async with database.write_session() as session:
        await plans.record(session, review)
        await session.commit()
    url = "/api/v1/tracking-plans/violations"
    response = await client.get(url, params={"kind": "enrichment_failed"}, headers=tenant.admin)
    [stored] = response.json()["items"]
    assert stored["event_id"] == 1
    assert len(stored["errors"]) == 6
    assert {e["path"] for e in stored["errors"]} == {"$.properties"}


async def test_a_missing_variable_fails_the_step_only(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, endpoints: str
) -> None:
    geo = http_step(
        f"{endpoints}/lookup",
        name="geo",
        method="POST",
        variables={"ip": "context.ip"},
        mapping={"region": "region"},
    )
    await plan_with(client, tenant, graphql_step(endpoints), geo)
    review = await plans.review(tenant.id, [viewed(tenant, 1, sku="A1")])
    assert review.events[0].properties == {"sku": "A1", "price": 12.5, "title": "Mug"}
    [violation] = review.violations
    assert [e.message for e in violation.errors] == [
        "step 'geo': the event has no value at 'context.ip'"
    ]


async def test_calls_run_concurrently_under_the_cap(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, endpoints: str, stats: Stats
) -> None:
    step = http_step(f"{endpoints}/products/{{sku}}", variables={"sku": "properties.sku"})
    step["url"] += "?delay=0.2"
    await plan_with(client, tenant, step)
    batch = [viewed(tenant, i, sku=f"gen-{i}") for i in range(40)]
    review = await plans.review(tenant.id, batch)
    assert review.violations == []
    assert all(e.properties["price"] == 1.0 for e in review.events)
    assert 1 < stats.most_in_flight <= MAX_CONCURRENT_CALLS


async def test_a_slow_endpoint_is_given_up_on_for_the_rest_of_the_batch(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans, endpoints: str
) -> None:
    step = http_step(
        f"{endpoints}/slow", name="slow", timeout_s=0.2, variables={"sku": "properties.sku"}
    )
    await plan_with(client, tenant, step)
    batch = [viewed(tenant, i, sku=f"s{i}") for i in range(MAX_CONCURRENT_CALLS + 8)]
    review = await plans.review(tenant.id, batch)
    assert len(review.events) == len(batch)
    messages = [v.errors[0].message for v in review.violations]
    assert len(messages) == len(batch)
    skipped = [m for m in messages if "skipped after" in m]
    timed_out = [m for m in messages if "no answer within" in m]
    # Calls waiting for a slot once the breaker opened are not made at all.
    assert len(skipped) >= 8 - (BREAKER_FAILURES - 1)
    assert len(timed_out) >= BREAKER_FAILURES
    assert len(skipped) + len(timed_out) == len(batch)


async def test_cached_answers_expire_after_the_steps_ttl(
    client: httpx.AsyncClient,
    tenant: Tenant,
    database: Database,
    settings: Settings,
    endpoints: str,
    stats: Stats,
) -> None:
    await plan_with(client, tenant, graphql_step(endpoints, cache_ttl_s=30))
    clock = FrozenClock(WHEN)
    plans = TrackingPlans(database, settings, clock)
    try:
        await plans.review(tenant.id, [viewed(tenant, 1, sku="B2")])
        clock.advance(timedelta(seconds=29))
        await plans.review(tenant.id, [viewed(tenant, 2, sku="B2")])
        assert stats.calls["graphql:B2"] == 1
        clock.advance(timedelta(seconds=2))
        await plans.review(tenant.id, [viewed(tenant, 3, sku="B2")])
        assert stats.calls["graphql:B2"] == 2
    finally:
        await plans.close()


async def test_an_endpoint_on_a_private_address_is_refused(
    client: httpx.AsyncClient,
    tenant: Tenant,
    database: Database,
    settings: Settings,
    endpoints: str,
    stats: Stats,
) -> None:
    await plan_with(client, tenant, http_step(f"{endpoints}/products/A1", name="internal"))
    deployed = settings.model_copy(update={"outbound_allowed_networks": ""})
    plans = TrackingPlans(database, deployed, SystemClock())
    try:
        review = await plans.review(tenant.id, [viewed(tenant, 1, sku="A1")])
    finally:
        await plans.close()
    [violation] = review.violations
    [error] = violation.errors
    assert "127.0.0.1: not a public address" in error.message
    assert review.events[0].properties == {"sku": "A1"}
    assert sum(stats.calls.values()) == 0
