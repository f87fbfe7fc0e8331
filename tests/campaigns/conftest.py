"""Fixtures for the campaign tests: a tenant with a pipeline on a frozen clock, and helpers
to make profiles, segments, templates, channels and campaigns through the API.

`desk.run()` runs every job due (message delivery included); `desk.run(deliver=False)`
leaves deliveries waiting, so messages stay `queued` (and their campaigns `sending`);
`desk.settle()` delivers them and lets their campaigns be `sent`. The API and the workers share one
frozen clock, which starts just ahead of the wall clock and moves only when told.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from clarion.campaigns.dispatch import DISPATCH, STUCK
from clarion.campaigns.models import CampaignRecipient
from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.core.jobs.worker import Registry, Worker
from clarion.core.settings import Settings
from clarion.messaging.delivery import DELIVER
from clarion.messaging.models import Message
from clarion.pipeline import Pipeline
from tests.conftest import Tenant
from tests.messaging.conftest import smtp_sink, tls_files  # noqa: F401 - fixtures used here
from tests.support import free_port

PRO = {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}
NEWS = {
    "subject": "News for {{ profile.traits.name | default('you') }}",
    "html": '<p>Hello</p><a href="https://shop.example/sale">Sale</a>',
}


@dataclass
class Desk:
    """A tenant, a pipeline and workers on a frozen clock, and helpers to use them."""

    client: httpx.AsyncClient
    tenant: Tenant
    clock: FrozenClock
    database: Database
    everything: Worker
    no_delivery: Worker

    async def run(self, *, deliver: bool = True) -> None:
        """Run every job due at the clock's time (and those they cause)."""
        await (self.everything if deliver else self.no_delivery).drain()

    async def later(self, delta: timedelta, *, deliver: bool = True) -> None:
        """Move the clock forward and run what is due."""
        self.clock.advance(delta)
        await self.run(deliver=deliver)

    async def settle(self) -> None:
        """Run what is due, then move the clock to each dispatch or delivery due within
        `STUCK` (the longest a sending campaign waits between looks at its messages) and
        run it, until none is: sending campaigns whose messages have all gone are then
        `sent`, at the clock's time."""
        await self.run()
        until = self.clock.now() + STUCK
        while True:
            due = [
                job.run_at
                for kind in (DISPATCH, DELIVER)
                for job in await self.jobs(kind)
                if job.state == "ready" and job.run_at <= until
            ]
            if not due:
                return
            self.clock.advance(max(timedelta(0), min(due) - self.clock.now()))
            await self.run()

    async def identify(self, user_id: str, **traits: Any) -> str:
        """Identify a customer (processed at once); their profile id."""
        await self.track_raw({"type": "identify", "userId": user_id, "traits": traits})
        return await self.profile_id(user_id)

    async def track_raw(self, *messages: dict[str, Any]) -> None:
        """Ingest the messages and process them (no delivery)."""
        for message in messages:
            message.setdefault("messageId", uuid.uuid4().hex)
        response = await self.client.post(
            "/v1/batch", json={"batch": list(messages)}, auth=self.tenant.writer
        )
        assert response.status_code == 200, response.text
        await self.run(deliver=False)

    async def profile_id(self, user_id: str) -> str:
        found = await self.client.get(
            "/api/v1/profiles", params={"user_id": user_id}, headers=self.tenant.admin
        )
        [profile] = found.json()["items"]
        return str(profile["id"])

    async def post(self, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.client.post(path, json=body, headers=self.tenant.admin)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params, headers=self.tenant.admin)
        assert response.status_code == 200, response.text
        return response.json()

    async def segment(self, rule: Any = PRO, name: str = "Pros") -> int:
        """A segment, computed (its baseline) before it is returned."""
        created = await self.post("/api/v1/segments", {"name": name, "rule": rule}, 201)
        await self.run(deliver=False)
        return int(created["id"])

    async def template(
        self, name: str = "News", content: dict[str, Any] = NEWS, channel: str = "email"
    ) -> int:
        body = {"name": name, "channel": channel, "content": content}
        return int((await self.post("/api/v1/templates", body, 201))["id"])

    async def channel(self, port: int | None = None, name: str = "Mail") -> int:
        """An email channel to the SMTP sink on `port`, else to a loopback port nobody
        listens on (refused at once)."""
        settings = {
            "host": "127.0.0.1",
            "port": port or free_port(),
            "security": "none",
            "helo_hostname": "localhost",
            "from_address": "news@shop.example",
        }
        body = {"name": name, "kind": "email", "settings": settings}
        return int((await self.post("/api/v1/channels", body, 201))["id"])

    async def campaign(self, **fields: Any) -> dict[str, Any]:
        body = {"name": f"Campaign {uuid.uuid4().hex[:6]}", **fields}
        created: dict[str, Any] = await self.post("/api/v1/campaigns", body, 201)
        return created

    async def launched(self, users: list[str], **fields: Any) -> dict[str, Any]:
        """A campaign to these (new) users through a new channel, sent and launched: its
        messages queued, none delivered yet."""
        for user in users:
            await self.identify(user)
        await self.channel()
        campaign = await self.campaign(
            audience={"type": "list", "user_ids": users},
            template_id=await self.template(),
            **fields,
        )
        await self.post(f"/api/v1/campaigns/{campaign['id']}/send")
        await self.run(deliver=False)
        return campaign

    async def read(self, campaign_id: int) -> dict[str, Any]:
        found: dict[str, Any] = await self.get(f"/api/v1/campaigns/{campaign_id}")
        return found

    async def recipients(self, campaign_id: int, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = await self.get(f"/api/v1/campaigns/{campaign_id}/recipients", **query)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def messages(self, campaign_id: int) -> list[Message]:
        """The campaign's messages, read from messaging's table."""
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(Message)
                .where(
                    Message.workspace_id == self.tenant.id,
                    Message.origin == "campaign",
                    Message.origin_id == str(campaign_id),
                )
                .order_by(Message.send_after, Message.profile_id)
            )
            return list(rows.all())

    async def jobs(self, kind: str) -> list[Job]:
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(Job).where(Job.workspace_id == self.tenant.id, Job.kind == kind)
            )
            return list(rows.all())

    async def recipient_rows(self, campaign_id: int) -> int:
        async with self.database.read_session() as session:
            count = await session.scalar(
                select(func.count()).where(CampaignRecipient.campaign_id == campaign_id)
            )
            return int(count or 0)


@pytest.fixture
async def desk(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> AsyncIterator[Desk]:
    # Ahead of the wall clock by more than a test lasts: jobs the API enqueues (at the wall
    # clock's time) are always due when the test's worker runs.
    clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=10))
    wall, app.state.clock = app.state.clock, clock
    database: Database = app.state.database
    pipeline = Pipeline(database, settings, clock)
    everything = Worker(database, pipeline.registry(), clock=clock)
    kinds = {k: v for k, v in pipeline.registry().kinds.items() if k != DELIVER}
    no_delivery = Worker(database, Registry(kinds), clock=clock)
    yield Desk(client, tenant, clock, database, everything, no_delivery)
    app.state.clock = wall
    await pipeline.close()
