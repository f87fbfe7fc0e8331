"""Migrations run up and down on both databases; an outdated schema is refused."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from clarion.core import migrations
from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.startup import SchemaBehind, prepare_database


async def _tables(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_upgrade_downgrade_upgrade(fresh_database: Database) -> None:
    assert await migrations.current_revision(fresh_database) is None

    await migrations.upgrade(fresh_database)
    assert await migrations.current_revision(fresh_database) == migrations.head_revision()
    assert {"workspaces", "sources", "api_keys", "events"} <= await _tables(fresh_database)

    await migrations.downgrade(fresh_database, "base")
    assert await _tables(fresh_database) <= {"alembic_version"}

    await migrations.upgrade(fresh_database)
    assert await migrations.current_revision(fresh_database) == migrations.head_revision()


async def test_models_and_migrations_agree(fresh_database: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from clarion.core.database import Base

    await migrations.upgrade(fresh_database)
    async with fresh_database.engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []


async def test_an_empty_database_is_migrated_and_an_outdated_one_refused(
    fresh_database: Database, settings: Settings
) -> None:
    await prepare_database(fresh_database, settings, SystemClock())
    assert await migrations.current_revision(fresh_database) == migrations.head_revision()

    async with fresh_database.write_session() as session:
        connection = await session.connection()
        await connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'older'")
        await session.commit()
    with pytest.raises(SchemaBehind, match="clarion migrate"):
        await prepare_database(fresh_database, settings, SystemClock())


async def test_the_canonical_id_index_holds_merged_profiles_only(
    fresh_database: Database,
) -> None:
    await migrations.upgrade(fresh_database)
    query = (
        "SELECT sql FROM sqlite_master WHERE name = 'ix_profiles_canonical_id'"
        if fresh_database.is_sqlite
        else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_profiles_canonical_id'"
    )
    async with fresh_database.engine.connect() as connection:
        definition = (await connection.exec_driver_sql(query)).scalar_one()
    assert "canonical_id IS NOT NULL" in definition


async def test_kept_email_html_is_compressed_with_lz4_on_postgresql(
    fresh_database: Database,
) -> None:
    await migrations.upgrade(fresh_database)
    if fresh_database.is_sqlite:
        return  # SQLite stores values as they are
    query = (
        "SELECT attcompression::text FROM pg_attribute"
        " WHERE attrelid = 'messages'::regclass AND attname = 'content'"
    )
    async with fresh_database.engine.connect() as connection:
        method = (await connection.exec_driver_sql(query)).scalar_one()
    assert method == "l"  # lz4 ("p": pglz, "": the server's default)
