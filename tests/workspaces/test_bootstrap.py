"""Bootstrap keys: exact values from the environment, applied idempotently."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.startup import prepare_database
from clarion.workspaces import service
from clarion.workspaces.models import ApiKey
from clarion.workspaces.schemas import KeyScope

WRITE_KEY = "bootstrap-write-key"
ADMIN_TOKEN = "bootstrap-admin-token-0123456789"


async def _keys(database: Database) -> list[ApiKey]:
    async with database.read_session() as session:
        return list((await session.scalars(select(ApiKey))).all())


def _with_bootstrap(settings: Settings) -> Settings:
    return Settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        bootstrap_write_key=WRITE_KEY,
        bootstrap_admin_token=ADMIN_TOKEN,
    )


async def test_bootstrap_keys_have_exactly_the_configured_values(
    fresh_database: Database, settings: Settings
) -> None:
    configured = _with_bootstrap(settings)
    for _ in range(3):  # idempotent: every start applies them again
        await prepare_database(fresh_database, configured, SystemClock())

    keys = await _keys(fresh_database)
    assert sorted(k.scope for k in keys) == ["admin", "write"]
    async with fresh_database.read_session() as session:
        write = await service.authenticate(
            session, secret=WRITE_KEY, scopes=frozenset({KeyScope.WRITE})
        )
        admin = await service.authenticate(
            session, secret=ADMIN_TOKEN, scopes=frozenset({KeyScope.ADMIN})
        )
        default = await service.get_workspace_by_slug_or_raise(session, slug="default")
    assert write.workspace_id == admin.workspace_id == default.id
    assert write.source_id is not None


async def test_a_revoked_bootstrap_key_stays_revoked(
    fresh_database: Database, settings: Settings
) -> None:
    configured = _with_bootstrap(settings)
    await prepare_database(fresh_database, configured, SystemClock())
    [admin] = [k for k in await _keys(fresh_database) if k.scope == "admin"]
    async with fresh_database.write_session() as session:
        await service.revoke_key(
            session, workspace_id=admin.workspace_id, key_id=admin.id, now=SystemClock().now()
        )
        await session.commit()

    await prepare_database(fresh_database, configured, SystemClock())

    [admin] = [k for k in await _keys(fresh_database) if k.scope == "admin"]
    assert admin.revoked_at is not None


async def test_a_first_run_without_bootstrap_keys_makes_and_shows_one_of_each(
    fresh_database: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="clarion"):
        await prepare_database(fresh_database, settings, SystemClock())
        await prepare_database(fresh_database, settings, SystemClock())

    keys = await _keys(fresh_database)
    assert sorted(k.scope for k in keys) == ["admin", "write"]
    shown = [
        r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records if "first run" in r.getMessage()
    ]
    assert len(shown) == 2  # once, not on the second start
    async with fresh_database.read_session() as session:
        for secret in shown:
            await service.authenticate(session, secret=secret, scopes=frozenset(KeyScope))
