"""The plans cache: bounded staleness without Redis, invalidation across processes with it."""

from __future__ import annotations

from datetime import timedelta

import httpx
import redis.asyncio as aioredis

from clarion.core.clock import FrozenClock, SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import TrackingPlans, service
from clarion.ingest.plans.cache import LOCAL_TTL_S, announce_change, namespace
from clarion.ingest.plans.schemas import TrackingPlanCreate
from clarion.ingest.plans.secrets import HeaderVault
from tests.conftest import Tenant
from tests.ingest.plans.support import WHEN, create_plan, event, eventually
from tests.support import free_port


async def block_unplanned(database: Database, tenant: Tenant, plan_id: int) -> None:
    """Change the plan straight in the database, as another process would."""
    body = TrackingPlanCreate(name="Plan", default=True, unplanned_events="block")
    async with database.write_session() as session:
        await service.update_plan(
            session,
            workspace_id=tenant.id,
            plan_id=plan_id,
            body=body,
            headers=HeaderVault("unused: no enrichment"),
            now=WHEN,
        )
        await session.commit()


async def passes(plans: TrackingPlans, tenant: Tenant) -> bool:
    review = await plans.review(tenant.id, [event(tenant, 1, name="Unplanned")])
    return bool(review.events)


async def test_without_redis_other_processes_catch_up_within_the_ttl(
    client: httpx.AsyncClient, tenant: Tenant, database: Database, settings: Settings
) -> None:
    plan = await create_plan(client, tenant)
    clock = FrozenClock(WHEN)
    other = TrackingPlans(database, settings, clock)
    try:
        assert await passes(other, tenant)
        await block_unplanned(database, tenant, plan["id"])  # no announcement reaches it
        clock.advance(timedelta(seconds=LOCAL_TTL_S - 0.1))
        assert await passes(other, tenant)  # stale, within the documented bound
        clock.advance(timedelta(seconds=0.2))
        assert not await passes(other, tenant)
    finally:
        await other.close()


async def test_a_change_through_the_api_applies_at_once_in_this_process(
    client: httpx.AsyncClient, tenant: Tenant, plans: TrackingPlans
) -> None:
    plan = await create_plan(client, tenant)
    assert await passes(plans, tenant)
    body = {"name": "Plan", "default": True, "unplanned_events": "block"}
    await client.put(f"/api/v1/tracking-plans/{plan['id']}", json=body, headers=tenant.admin)
    assert not plans.cached(tenant.id)
    assert not await passes(plans, tenant)
    await client.delete(f"/api/v1/tracking-plans/{plan['id']}", headers=tenant.admin)
    assert await passes(plans, tenant)


async def test_with_redis_a_change_through_one_process_reaches_the_other(
    client: httpx.AsyncClient,
    tenant: Tenant,
    database: Database,
    settings: Settings,
    redis_url: str,
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url})
    plan = await create_plan(client, tenant)
    first = TrackingPlans(database, shared, SystemClock())
    second = TrackingPlans(database, shared, SystemClock())
    try:
        assert await passes(first, tenant)
        assert await passes(second, tenant)
        assert second.cached(tenant.id)

        await block_unplanned(database, tenant, plan["id"])
        await first.invalidate(tenant.id)
        assert not first.cached(tenant.id)
        await eventually(lambda: not second.cached(tenant.id))  # the pub/sub message arrived
        assert not await passes(second, tenant)
        assert not await passes(first, tenant)
    finally:
        await first.close()
        await second.close()


async def test_with_redis_the_configuration_is_shared_through_redis(
    client: httpx.AsyncClient,
    tenant: Tenant,
    database: Database,
    settings: Settings,
    redis_url: str,
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url})
    await create_plan(client, tenant)
    plans = TrackingPlans(database, shared, SystemClock())
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await passes(plans, tenant)
        keys = await redis.keys(f"{namespace(shared)}:{tenant.id}:config:*")
        assert len(keys) == 1
        assert await redis.ttl(keys[0]) > 0
    finally:
        await plans.close()
        await redis.aclose()


async def test_with_redis_an_api_change_is_announced_to_every_process(
    client: httpx.AsyncClient,
    tenant: Tenant,
    database: Database,
    settings: Settings,
    redis_url: str,
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url})
    plan = await create_plan(client, tenant)
    other = TrackingPlans(database, shared, SystemClock())
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert await passes(other, tenant)
        generation = f"{namespace(shared)}:{tenant.id}:gen"
        before = int(await redis.get(generation) or 0)
        # The application under test has no Redis configured; announce as one that has.
        await block_unplanned(database, tenant, plan["id"])
        await announce_change(shared, tenant.id)
        assert int(await redis.get(generation) or 0) == before + 1
        await eventually(lambda: not other.cached(tenant.id))
        assert not await passes(other, tenant)
    finally:
        await other.close()
        await redis.aclose()


async def test_when_redis_is_down_reviews_use_the_database_and_the_short_ttl(
    client: httpx.AsyncClient, tenant: Tenant, database: Database, settings: Settings
) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    plan = await create_plan(client, tenant)
    clock = FrozenClock(WHEN)
    plans = TrackingPlans(database, down, clock)
    try:
        assert await passes(plans, tenant)
        await block_unplanned(database, tenant, plan["id"])
        clock.advance(timedelta(seconds=LOCAL_TTL_S + 0.1))
        assert not await passes(plans, tenant)
    finally:
        await plans.close()
