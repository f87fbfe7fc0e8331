"""What every Clarion process does to its database before it works (the API, a worker, a
command): migrate an empty one, refuse one whose schema is behind, give the default
workspace its keys, seal enrichment header values saved before sealing, seal again under
the current secret key what previous keys sealed, and refresh SQLite's planner statistics.
Apart from the API so that workers and commands start without importing it."""

from __future__ import annotations

import logging

from clarion.core import migrations
from clarion.core.clock import Clock
from clarion.core.crypto import Vault
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import secrets as plan_secrets
from clarion.ingest.plans.cache import announce_change
from clarion.workspaces import service as workspaces

log = logging.getLogger("clarion")


class SchemaBehind(RuntimeError):
    """The database holds data but an older schema: `clarion migrate` must run first."""


async def prepare_database(database: Database, settings: Settings, clock: Clock) -> None:
    """Migrate an empty database, refuse an outdated one, apply the bootstrap keys, and
    give SQLite's planner fresh statistics."""
    current = await migrations.current_revision(database)
    if current is None:
        log.info("empty database: creating the schema")
        await migrations.upgrade(database)
    elif current != migrations.head_revision():
        raise SchemaBehind(
            f"The database schema is at {current}, this Clarion needs "
            f"{migrations.head_revision()}: run `clarion migrate` first."
        )
    await bootstrap_keys(database, settings, clock)
    await seal_enrichment_headers(database, settings)
    await reseal_channel_credentials(database, settings)
    await database.refresh_statistics()


async def seal_enrichment_headers(database: Database, settings: Settings) -> None:
    """Seal under the current secret key the enrichment header values that plans saved
    before sealing, or sealed under a previous key, still hold."""
    headers = plan_secrets.HeaderVault(settings.secret_keys())
    async with database.read_session() as session:
        plans = await plan_secrets.plans_to_seal(session, headers)
    if not plans:
        return  # the usual start: nothing to write, so no write transaction either
    async with database.write_session() as session:
        changed = await plan_secrets.seal_plans(session, plans)
        await session.commit()
    for workspace_id in sorted(changed):
        log.info("tracking plans of workspace %s: enrichment header values sealed", workspace_id)
        await announce_change(settings, workspace_id)


async def reseal_channel_credentials(database: Database, settings: Settings) -> None:
    """Seal under the current secret key the channel secrets a previous key sealed (only
    while previous keys are configured: otherwise there is nothing such to find)."""
    keys = settings.secret_keys()
    if not keys.previous:
        return
    # Imported here: only a rotation needs messaging, which every command would load else.
    from clarion.messaging import channel_config

    async with database.read_session() as session:
        found = await channel_config.credentials_to_reseal(session, Vault(keys))
    if not found:
        return
    async with database.write_session() as session:
        stored = await channel_config.reseal_credentials(session, found)
        await session.commit()
    log.info("channel secrets of %s channel(s) sealed again under the current secret key", stored)


async def bootstrap_keys(database: Database, settings: Settings, clock: Clock) -> None:
    """Give the default workspace its configured keys, or first keys on a first run."""
    write_key = settings.bootstrap_write_key
    admin_token = settings.bootstrap_admin_token
    async with database.write_session() as session:
        _, created = await workspaces.bootstrap(
            session,
            now=clock.now(),
            write_key=write_key.get_secret_value() if write_key else None,
            admin_token=admin_token.get_secret_value() if admin_token else None,
        )
        await session.commit()
    configured = write_key is not None or admin_token is not None
    for key, secret in created:
        if configured:
            log.info("bootstrap %s key %s is in place", key.scope, key.key_prefix)
        else:
            # First run with nothing configured: the operator needs these once.
            log.warning("first run: %s key (shown once, store it now): %s", key.scope, secret)
