"""Helpers for tracking plan tests: events, plans, and waiting on a condition."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from clarion.ingest.records import EventRecord
from tests.conftest import Tenant

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def event(
    tenant: Tenant,
    event_id: int,
    *,
    type: str = "track",
    name: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    source_id: uuid.UUID | None = None,
    user_id: str | None = "u1",
    context: dict[str, Any] | None = None,
) -> EventRecord:
    """An accepted event of the tenant, as the pipeline hands it on."""
    return EventRecord(
        id=event_id,
        workspace_id=tenant.id,
        source_id=source_id or tenant.source_id,
        message_id=f"m-{event_id}",
        type=type,
        name=name,
        user_id=user_id,
        anonymous_id=None,
        group_id="g1" if type == "group" else None,
        previous_id=None,
        timestamp=WHEN,
        received_at=WHEN,
        properties=properties or {},
        traits=traits or {},
        context=context or {},
    )


async def create_plan(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    """A plan made through the API (defaults: the workspace's default plan, warn/warn)."""
    payload = {"name": "Plan", "default": True, **body}
    response = await client.post("/api/v1/tracking-plans", json=payload, headers=tenant.admin)
    assert response.status_code == 201, response.text
    plan: dict[str, Any] = response.json()
    return plan


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until `condition()` holds, checking every 10 ms; fail after `within` seconds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition(), f"still false after {within} s"
