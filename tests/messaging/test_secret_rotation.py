"""Rotating the secret key: with the old key in `CLARION_PREVIOUS_SECRET_KEYS`, links that
messages already carry keep working, and each start seals stored channel secrets again
under the new key; without it, the old links are refused like any link not ours."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from clarion.app import create_app
from clarion.core.crypto import UnreadableSecret, Vault
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.messaging import channel_config
from clarion.messaging.models import MessagingChannel
from clarion.messaging.tracking import LinkSigner
from clarion.startup import reseal_channel_credentials
from tests.conftest import Tenant
from tests.messaging.test_engagement import LINKS, make_message, person

OLD = "the-previous-secret-key-01"


def rotating(settings: Settings) -> Settings:
    """The tests' settings with `OLD` as the previous secret key."""
    return settings.model_copy(update={"previous_secret_keys": SecretStr(OLD)})


@pytest.fixture
async def rotated(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a second application on the tests' database, started with `OLD` listed
    as the previous key."""
    application = create_app(rotating(settings), run_worker=False)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as http:
            yield http


async def channel_sealed_by(database: Database, tenant: Tenant, key: str) -> int:
    async with database.write_session() as session:
        row = await channel_config.create_channel(
            session,
            workspace_id=tenant.id,
            vault=Vault(key),
            name=f"Mail {uuid.uuid4().hex[:6]}",
            kind="email",
            settings={"host": "smtp.example.com", "from_address": "news@example.com"},
            secrets={"password": "pa55-word"},
            rate_per_second=None,
            is_default=None,
            now=datetime.now(UTC),
        )
        await session.commit()
        return row.id


async def stored_credentials(database: Database, channel_id: int) -> str:
    async with database.read_session() as session:
        stored = await session.scalar(
            select(MessagingChannel.credentials).where(MessagingChannel.id == channel_id)
        )
    assert stored is not None
    return stored


async def test_links_signed_with_the_previous_key_keep_working(
    client: httpx.AsyncClient,
    rotated: httpx.AsyncClient,
    database: Database,
    tenant: Tenant,
) -> None:
    profile_id = await person(database, tenant, f"user-{uuid.uuid4().hex[:8]}")
    message_id = await make_message(database, tenant, profile_id)
    old = LinkSigner(OLD)
    click = f"/t/c/{old.sign_click(message_id, 1)}"
    unsubscribe = f"/u/{old.sign_unsubscribe(workspace_id=tenant.id, profile_id=profile_id)}"

    for path in (click, unsubscribe):  # the current key alone: not ours
        assert (await client.get(path)).status_code == 404
    followed = await rotated.get(click)
    assert followed.status_code == 302 and followed.headers["location"] == LINKS[1]
    page = await rotated.get(unsubscribe)
    assert page.status_code == 200 and "unsubscribe" in page.text.lower()


async def test_a_start_seals_channel_secrets_again_under_the_current_key(
    database: Database, settings: Settings, tenant: Tenant
) -> None:
    current = Vault(settings.resolved_secret_key())
    by_old = await channel_sealed_by(database, tenant, OLD)
    by_current = await channel_sealed_by(database, tenant, settings.resolved_secret_key())
    by_unknown = await channel_sealed_by(database, tenant, "a-key-nobody-lists-any-more")
    before = {i: await stored_credentials(database, i) for i in (by_old, by_current, by_unknown)}
    with pytest.raises(UnreadableSecret):
        current.open(before[by_old])

    await reseal_channel_credentials(database, settings)  # no previous key: nothing to do
    assert await stored_credentials(database, by_old) == before[by_old]

    await reseal_channel_credentials(database, rotating(settings))
    assert current.open(await stored_credentials(database, by_old)) == {"password": "pa55-word"}
    assert await stored_credentials(database, by_current) == before[by_current]
    assert await stored_credentials(database, by_unknown) == before[by_unknown]
    async with database.read_session() as session:  # a second start finds nothing to do
        rotating_vault = Vault(rotating(settings).secret_keys())
        left = await channel_config.credentials_to_reseal(session, rotating_vault)
    assert by_old not in left


async def test_secrets_saved_meanwhile_are_not_overwritten(
    database: Database, settings: Settings, tenant: Tenant
) -> None:
    rotating_vault = Vault(rotating(settings).secret_keys())
    channel_id = await channel_sealed_by(database, tenant, OLD)
    async with database.read_session() as session:
        found = await channel_config.credentials_to_reseal(session, rotating_vault)
    assert channel_id in found
    saved = Vault(settings.resolved_secret_key()).seal({"password": "changed-meanwhile"})
    async with database.write_session() as session:
        row = await session.get(MessagingChannel, channel_id)
        assert row is not None
        row.credentials = saved
        await session.commit()
    async with database.write_session() as session:
        stored = await channel_config.reseal_credentials(session, {channel_id: found[channel_id]})
        await session.commit()
    assert stored == 0
    assert await stored_credentials(database, channel_id) == saved
