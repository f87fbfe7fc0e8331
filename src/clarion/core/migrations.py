"""Schema migrations (Alembic), run on either database from async code."""

from __future__ import annotations

import logging
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from clarion.core.database import Database

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every Clarion process.
_MIGRATION_LOCK_ID = 0x434C4152


def alembic_config() -> Config:
    """Alembic's configuration, pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(files("clarion") / "migrations"))
    return config


def head_revision() -> str | None:
    """The newest migration this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(database: Database) -> str | None:
    """The migration the database is at; None for an empty database."""
    async with database.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`; concurrent callers on PostgreSQL take turns."""

    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        config = alembic_config()
        config.attributes["connection"] = connection
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(config, revision)
        after = MigrationContext.configure(connection).get_current_revision()
        if after != before:
            log.info("database migrated from %s to %s", before or "empty", after)

    async with database.write_session() as session:
        connection = await session.connection()
        await connection.run_sync(run)
        await session.commit()


async def downgrade(database: Database, revision: str) -> None:
    """Take the schema back to `revision` (for development and tests)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with database.write_session() as session:
        connection = await session.connection()
        await connection.run_sync(run)
        await session.commit()
