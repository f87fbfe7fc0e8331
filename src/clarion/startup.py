"""What every Clarion process does to its database before it works (the API, a worker, a
command): migrate an empty one, refuse one whose schema is behind, give the default
workspace its keys, seal enrichment header values saved before sealing, and refresh
SQLite's planner statistics. Apart from the API so that workers and commands start without
importing it."""

from __future__ import annotations

import logging

from clarion.core import migrations
from clarion.core.clock import Clock
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
    await database.refresh_statistics()


async def seal_enrichment_headers(database: Database, settings: Settings) -> None:
    """Seal the enrichment header values that plans saved before sealing still hold."""
    headers = plan_secrets.HeaderVault(settings.resolved_secret_key())
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
