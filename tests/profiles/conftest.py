"""Helpers for profile tests: events go in through the real ingestion API, then through
`apply_events` in a write transaction, exactly as the pipeline runs them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.core.database import Database
from clarion.ingest.models import Event
from clarion.ingest.records import EventRecord
from clarion.profiles import service
from tests.campaigns.conftest import desk  # noqa: F401 - fixture used by test_erasure
from tests.conftest import Tenant
from tests.messaging.conftest import smtp_sink, tls_files  # noqa: F401 - fixtures, likewise

BASE = datetime(2026, 1, 1, tzinfo=UTC)
Send = Callable[..., Awaitable[list[EventRecord]]]


def at(minutes: int) -> str:
    """An ISO timestamp `minutes` after BASE."""
    return (BASE + timedelta(minutes=minutes)).isoformat()


async def ingest(
    client: httpx.AsyncClient, database: Database, tenant: Tenant, messages: list[dict[str, Any]]
) -> list[EventRecord]:
    """Store `messages` through POST /v1/batch; their records, in the order sent."""
    ids = []
    for message in messages:
        message.setdefault("messageId", uuid.uuid4().hex)
        ids.append(message["messageId"])
    response = await client.post("/v1/batch", json={"batch": messages}, auth=tenant.writer)
    assert response.status_code == 200, response.text
    assert not response.json()["rejected"], response.text
    async with database.read_session() as session:
        rows = (
            await session.scalars(
                select(Event).where(Event.workspace_id == tenant.id, Event.message_id.in_(ids))
            )
        ).all()
    by_id = {row.message_id: EventRecord.from_row(row) for row in rows}
    return [by_id[i] for i in ids]


async def apply(database: Database, tenant: Tenant, records: list[EventRecord]) -> None:
    """Run `apply_events` in a write transaction and commit, as the pipeline does."""
    async with database.write_session() as session:
        await service.apply_events(
            session, workspace_id=tenant.id, events=records, now=datetime.now(UTC)
        )
        await session.commit()


@pytest.fixture
def send(client: httpx.AsyncClient, database: Database, tenant: Tenant) -> Send:
    """Ingest messages and apply them to profiles (one batch); their records."""

    async def run(*messages: dict[str, Any], apply_now: bool = True) -> list[EventRecord]:
        records = await ingest(client, database, tenant, list(messages))
        if apply_now:
            await apply(database, tenant, records)
        return records

    return run


def identify(
    user_id: str | None = None, anonymous_id: str | None = None, minute: int = 0, **traits: Any
) -> dict[str, Any]:
    """An identify message."""
    message: dict[str, Any] = {"type": "identify", "traits": traits, "timestamp": at(minute)}
    if user_id:
        message["userId"] = user_id
    if anonymous_id:
        message["anonymousId"] = anonymous_id
    return message


def track(
    event: str,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    minute: int = 0,
    **properties: Any,
) -> dict[str, Any]:
    """A track message."""
    message: dict[str, Any] = {
        "type": "track",
        "event": event,
        "properties": properties,
        "timestamp": at(minute),
    }
    if user_id:
        message["userId"] = user_id
    if anonymous_id:
        message["anonymousId"] = anonymous_id
    return message


def alias(previous_id: str, user_id: str, minute: int = 0) -> dict[str, Any]:
    """An alias message."""
    return {"type": "alias", "previousId": previous_id, "userId": user_id, "timestamp": at(minute)}
