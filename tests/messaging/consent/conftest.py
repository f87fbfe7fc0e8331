"""Fixtures for the consent tests: a workspace with helpers that go through the real API and
services (profiles made by `upsert_profile`, links signed with the app's own key)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from clarion.core.database import Database
from clarion.ingest.models import Event
from clarion.messaging.consent.service import Links
from clarion.messaging.models import Consent, Suppression
from clarion.profiles.service import upsert_profile
from tests.conftest import Tenant


@dataclass
class Shop:
    """One workspace, its admin API and what the tests read back."""

    client: httpx.AsyncClient
    tenant: Tenant
    database: Database
    links: Links

    async def person(
        self, user_id: str | None, *, email: str | None = None, phone: str | None = None
    ) -> uuid.UUID:
        """A new profile with these identities."""
        async with self.database.write_session() as session:
            profile = await upsert_profile(
                session,
                workspace_id=self.tenant.id,
                user_id=user_id,
                email=email,
                phone=phone,
                traits={},
                now=datetime.now(UTC),
            )
            await session.commit()
            return profile.id

    async def topic(self, name: str, channel: str = "email", **fields: Any) -> int:
        """A new topic's id, made through the API."""
        body = {"name": name, "channel": channel, **fields}
        response = await self.client.post("/api/v1/topics", json=body, headers=self.tenant.admin)
        assert response.status_code == 201, response.text
        topic_id: int = response.json()["id"]
        return topic_id

    async def say(
        self, profile_id: uuid.UUID, channel: str, state: str, topic_id: int | None = None
    ) -> None:
        """Set a consent through the API."""
        body = {"channel": channel, "topic_id": topic_id, "state": state}
        response = await self.client.put(
            f"/api/v1/profiles/{profile_id}/consent", json=body, headers=self.tenant.admin
        )
        assert response.status_code == 200, response.text

    async def states(self, profile_id: uuid.UUID) -> dict[str, tuple[str, str]]:
        """The profile's says, by scope: (state, source)."""
        response = await self.client.get(
            f"/api/v1/profiles/{profile_id}/consent", headers=self.tenant.admin
        )
        assert response.status_code == 200, response.text
        return {item["scope"]: (item["state"], item["source"]) for item in response.json()}

    async def events(self, name: str) -> list[Event]:
        """Clarion's events of that name in the workspace's log, oldest first."""
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(Event)
                .where(Event.workspace_id == self.tenant.id, Event.name == name)
                .order_by(Event.id)
            )
            return list(rows.all())

    async def counts(self) -> tuple[int, int, int]:
        """How many consents, suppressions and events the workspace holds."""
        async with self.database.read_session() as session:
            counted = []
            for table in (Consent, Suppression, Event):
                counted.append(
                    await session.scalar(
                        select(func.count())
                        .select_from(table)
                        .where(table.workspace_id == self.tenant.id)
                    )
                    or 0
                )
            return counted[0], counted[1], counted[2]


def app_links(app: FastAPI) -> Links:
    """Links signed as the application signs them."""
    return Links.from_settings(app.state.settings, app.state.secret_keys)


@pytest.fixture
def shop(app: FastAPI, client: httpx.AsyncClient, tenant: Tenant) -> Shop:
    return Shop(client, tenant, app.state.database, app_links(app))


@pytest.fixture
def other_shop(app: FastAPI, client: httpx.AsyncClient, other_tenant: Tenant) -> Shop:
    return Shop(client, other_tenant, app.state.database, app_links(app))
