"""The delivery tests' shop: a workspace with an email channel on the real SMTP sink, a
template, and a worker on a frozen clock (the `post` fixture, in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.worker import Worker
from clarion.core.settings import Settings
from clarion.ingest.models import Event
from clarion.messaging import delivery, templates
from clarion.messaging.delivery import MessageRequest
from clarion.messaging.models import Message, MessageEvent
from clarion.pipeline import Pipeline
from tests.conftest import Tenant

if TYPE_CHECKING:
    from tests.messaging.conftest import SmtpSink

PUBLIC = "https://mail.shop.example"
# The clock: noon UTC after the real now (jobs the API enqueues are due at the real time).
_TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
NOON = _TODAY + timedelta(days=1)
HTML = (
    "<html><head><style>p { color: #333; }</style></head><body>"
    "<p>Hi {{ profile.traits.first_name | default('there') }}</p>"
    '<p><a href="https://shop.example/sale">Sale</a> '
    '<a href="{{ links.unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


@dataclass
class Post:
    """A workspace with an email channel on the SMTP sink, a template, and a worker."""

    client: httpx.AsyncClient
    tenant: Tenant
    database: Database
    clock: FrozenClock
    worker: Worker
    sink: SmtpSink
    template_id: int
    version_id: int

    async def profile(self, user_id: str, **traits: Any) -> uuid.UUID:
        message = {"type": "identify", "userId": user_id, "traits": traits}
        message["messageId"] = uuid.uuid4().hex
        sent = await self.client.post(
            "/v1/batch", json={"batch": [message]}, auth=self.tenant.writer
        )
        assert sent.status_code == 200, sent.text
        await self.worker.drain()
        found = await self.client.get(
            "/api/v1/profiles", params={"user_id": user_id}, headers=self.tenant.admin
        )
        return uuid.UUID(found.json()["items"][0]["id"])

    async def profile_of(self, user_id: str) -> uuid.UUID:
        found = await self.client.get(
            "/api/v1/profiles", params={"user_id": user_id}, headers=self.tenant.admin
        )
        return uuid.UUID(found.json()["items"][0]["id"])

    async def queue(self, *requests: MessageRequest) -> list[uuid.UUID]:
        async with self.database.write_session() as session:
            ids = await delivery.queue_messages(
                session, workspace_id=self.tenant.id, requests=requests, now=self.clock.now()
            )
            await session.commit()
        return ids

    def request(self, profile_id: uuid.UUID, key: str, **fields: Any) -> MessageRequest:
        return MessageRequest(
            profile_id=profile_id,
            template_id=self.template_id,
            template_version_id=self.version_id,
            channel="email",
            idempotency_key=key,
            origin="api",
            **fields,
        )

    async def message(self, message_id: uuid.UUID) -> Message:
        async with self.database.read_session() as session:
            found = await session.get(Message, message_id)
            assert found is not None
            return found

    async def history(self, message_id: uuid.UUID) -> list[str]:
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(MessageEvent.kind)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.id)
            )
            return list(rows.all())

    async def events(self, name: str) -> list[dict[str, Any]]:
        async with self.database.read_session() as session:
            rows = await session.scalars(
                select(Event).where(Event.workspace_id == self.tenant.id, Event.name == name)
            )
            return [{"user_id": e.user_id, **(e.properties or {})} for e in rows]

    async def add(self, *rows: Any) -> None:
        async with self.database.write_session() as session:
            session.add_all(rows)
            await session.commit()


async def make_post(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant: Tenant,
    settings: Settings,
    smtp_sink: SmtpSink,
) -> AsyncIterator[Post]:
    channel = {
        "name": "Mail",
        "kind": "email",
        "settings": {
            "host": "127.0.0.1",
            "port": smtp_sink.port,
            "security": "none",
            "helo_hostname": "localhost",
            "from_address": "news@shop.example",
            "timeout": 5,
        },
    }
    created = await client.post("/api/v1/channels", json=channel, headers=tenant.admin)
    assert created.status_code == 201, created.text
    template = {
        "name": "Sale",
        "channel": "email",
        "content": {
            "subject": "Our sale, {{ profile.traits.first_name | default('friend') }}",
            "html": HTML,
        },
    }
    made = await client.post("/api/v1/templates", json=template, headers=tenant.admin)
    assert made.status_code == 201, made.text
    async with app.state.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=tenant.id, template_id=made.json()["id"]
        )
    clock = FrozenClock(NOON)
    pipeline = Pipeline(
        app.state.database, settings.model_copy(update={"public_url": PUBLIC}), clock
    )
    worker = Worker(app.state.database, pipeline.registry(), clock=clock)
    yield Post(
        client,
        tenant,
        app.state.database,
        clock,
        worker,
        smtp_sink,
        made.json()["id"],
        version.id,
    )
    await pipeline.close()
