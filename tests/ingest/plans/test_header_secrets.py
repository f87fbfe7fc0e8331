"""Enrichment header values are stored sealed, sealed at start when saved before, and a
step whose values this secret key cannot open fails without a call."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import update

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import TrackingPlans
from clarion.ingest.plans.models import TrackingPlan
from clarion.ingest.plans.secrets import HeaderVault, is_sealed, seal_stored_headers
from clarion.startup import seal_enrichment_headers
from tests.conftest import Tenant
from tests.ingest.plans.conftest import Stats
from tests.ingest.plans.support import create_plan, event


def whoami_rule(endpoints: str, key: str) -> dict[str, Any]:
    step = {
        "name": "whoami",
        "kind": "http",
        "url": f"{endpoints}/whoami",
        "headers": {"X-Api-Key": key},
        "mapping": {"key": "api_key"},
        "cache_ttl_s": 0,
    }
    return {"type": "track", "name": "Product Viewed", "enrichments": [step]}


async def stored_header(database: Database, plan_id: int) -> str:
    async with database.read_session() as session:
        plan = await session.get(TrackingPlan, plan_id)
        assert plan is not None
        value: str = plan.events[0]["enrichments"][0]["headers"]["X-Api-Key"]
        return value


async def store_header(database: Database, plan_id: int, value: str) -> None:
    """Write a header value straight into the stored plan, as an older Clarion did."""
    async with database.write_session() as session:
        plan = await session.get(TrackingPlan, plan_id)
        assert plan is not None
        rules = orjson.loads(orjson.dumps(plan.events))
        rules[0]["enrichments"][0]["headers"]["X-Api-Key"] = value
        await session.execute(
            update(TrackingPlan).where(TrackingPlan.id == plan_id).values(events=rules)
        )
        await session.commit()


async def api_key_sent(database: Database, settings: Settings, tenant: Tenant) -> Any:
    """What the endpoint saw as the key, through a process that has cached nothing."""
    plans = TrackingPlans(database, settings, SystemClock())
    try:
        review = await plans.review(tenant.id, [event(tenant, 1, name="Product Viewed")])
    finally:
        await plans.close()
    [enriched] = review.events
    return enriched.properties.get("api_key"), review.violations


async def test_header_values_are_stored_sealed_and_sent_in_the_clear(
    client: httpx.AsyncClient,
    database: Database,
    settings: Settings,
    tenant: Tenant,
    endpoints: str,
) -> None:
    plan = await create_plan(client, tenant, events=[whoami_rule(endpoints, "k-123")])
    stored = await stored_header(database, plan["id"])
    assert is_sealed(stored) and "k-123" not in stored
    assert HeaderVault(settings.resolved_secret_key()).open(stored) == "k-123"
    assert await api_key_sent(database, settings, tenant) == ("k-123", [])


async def test_values_saved_before_sealing_work_and_are_sealed_at_start(
    client: httpx.AsyncClient,
    database: Database,
    settings: Settings,
    tenant: Tenant,
    endpoints: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = await create_plan(client, tenant, events=[whoami_rule(endpoints, "k-new")])
    await store_header(database, plan["id"], "k-legacy")
    assert await api_key_sent(database, settings, tenant) == ("k-legacy", [])

    await seal_enrichment_headers(database, settings)
    stored = await stored_header(database, plan["id"])
    assert is_sealed(stored) and "k-legacy" not in stored
    assert await api_key_sent(database, settings, tenant) == ("k-legacy", [])
    async with database.read_session() as session:
        version = (await session.get(TrackingPlan, plan["id"])).version  # type: ignore[union-attr]
    assert version == plan["version"]  # sealing is not a change of the plan
    async with database.write_session() as session:
        assert (
            await seal_stored_headers(session, HeaderVault(settings.resolved_secret_key())) == set()
        )

    # Every later start reads, finds nothing to seal, and opens no write transaction.
    def no_writes() -> None:
        raise AssertionError("a start with every plan sealed wrote")

    monkeypatch.setattr(database, "write_session", no_writes)
    await seal_enrichment_headers(database, settings)


async def test_values_a_previous_key_sealed_work_and_are_sealed_again_at_start(
    client: httpx.AsyncClient,
    database: Database,
    settings: Settings,
    tenant: Tenant,
    endpoints: str,
) -> None:
    old = "the-previous-secret-key-01"
    plan = await create_plan(client, tenant, events=[whoami_rule(endpoints, "k-new")])
    await store_header(database, plan["id"], HeaderVault(old).seal("k-old"))
    rotating = settings.model_copy(update={"previous_secret_keys": SecretStr(old)})
    assert await api_key_sent(database, rotating, tenant) == ("k-old", [])

    await seal_enrichment_headers(database, rotating)
    stored = await stored_header(database, plan["id"])
    assert HeaderVault(settings.resolved_secret_key()).open(stored) == "k-old"
    assert await api_key_sent(database, settings, tenant) == ("k-old", [])  # old key dropped
    async with database.write_session() as session:
        assert await seal_stored_headers(session, HeaderVault(rotating.secret_keys())) == set()


async def test_a_value_this_secret_key_cannot_open_fails_the_step_without_a_call(
    client: httpx.AsyncClient,
    database: Database,
    settings: Settings,
    tenant: Tenant,
    endpoints: str,
    stats: Stats,
) -> None:
    plan = await create_plan(client, tenant, events=[whoami_rule(endpoints, "k-1")])
    await store_header(database, plan["id"], HeaderVault("another secret key").seal("k-1"))
    key, violations = await api_key_sent(database, settings, tenant)
    assert key is None and stats.calls["whoami"] == 0
    [violation] = violations
    [error] = violation.errors
    assert violation.kind == "enrichment_failed"
    assert "cannot be read with this secret key" in error.message

    # Sent again through the API, the value is sealed with this key and works.
    body = {k: plan[k] for k in ("name", "default", "source_ids")}
    body["events"] = [whoami_rule(endpoints, "k-2")]
    saved = await client.put(
        f"/api/v1/tracking-plans/{plan['id']}", json=body, headers=tenant.admin
    )
    assert saved.status_code == 200, saved.text
    assert await api_key_sent(database, settings, tenant) == ("k-2", [])
