"""A person's erasure deletes by cascade from every table whose foreign key names the
profile: each such table has an index starting with `profile_id` (a primary key counts),
and a delete by `profile_id` uses it instead of reading the table, on both databases."""

from __future__ import annotations

import uuid

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from clarion.core import migrations
from clarion.core.database import Database

# The tables the cascade reaches, and the index a delete of one profile's rows reads
# (migration 0018 made the first three; messages had theirs).
CASCADED = {
    "consents": "ix_consents_profile_id",
    "campaign_recipients": "ix_campaign_recipients_profile_id",
    "journey_runs": "ix_journey_runs_profile_id",
    "messages": "ix_messages_profile_id_sent_at",
}


def unindexed_cascades(sync: Connection) -> tuple[set[str], list[tuple[str, list[str]]]]:
    """The tables with an `ON DELETE CASCADE` key to `profiles.id`, and those keys (table,
    columns) that no index or primary key of their table starts with, as the database
    has them."""
    schema = inspect(sync)
    tables, unindexed = set(), []
    for table in schema.get_table_names():
        leading = [list(index["column_names"]) for index in schema.get_indexes(table)]
        leading.append(list(schema.get_pk_constraint(table)["constrained_columns"]))
        for key in schema.get_foreign_keys(table):
            cascades = (key.get("options") or {}).get("ondelete", "").upper() == "CASCADE"
            if key["referred_table"] != "profiles" or not cascades:
                continue
            tables.add(table)
            columns = list(key["constrained_columns"])
            if not any(index[: len(columns)] == columns for index in leading):
                unindexed.append((table, columns))
    return tables, unindexed


async def test_every_table_the_cascade_reaches_is_indexed_by_the_profile_first(
    database: Database,
) -> None:
    async with database.engine.connect() as connection:
        tables, unindexed = await connection.run_sync(unindexed_cascades)
    assert set(CASCADED) <= tables
    assert unindexed == []


# On PostgreSQL the planner reads an index only where it is cheaper than the table:
# rows are made for it, as the erasure meets them in a workspace of some size.
_FILL = (
    "INSERT INTO workspaces (id, slug, name, created_at) VALUES (1, 'w', 'w', now())",
    "INSERT INTO profiles (id, workspace_id, traits, trait_times, computed, created_at,"
    " updated_at) SELECT md5(g::text)::uuid, 1, '{}', '{}', '{}', now(), now()"
    " FROM generate_series(1, 5000) g",
    "INSERT INTO consents (workspace_id, profile_id, scope, channel, state, source,"
    " updated_at) SELECT 1, md5(g::text)::uuid, 'email', 'email', 'opted_in', 'api', now()"
    " FROM generate_series(1, 5000) g",
    "INSERT INTO campaigns (id, workspace_id, name, description, state, audience, template_id,"
    " channel, category, priority, schedule_version, snapshot_done, audience_size, slots,"
    " shift_seconds, created_at, updated_at) SELECT c, 1, 'c' || c, '', 'sent', '{}', 1,"
    " 'email', 'marketing', 0, 0, true, 0, '[]', 0, now(), now() FROM generate_series(1, 4) c",
    "INSERT INTO campaign_recipients (campaign_id, profile_id, workspace_id, send_at, state,"
    " updated_at) SELECT c, md5(g::text)::uuid, 1, now(), 'queued', now()"
    " FROM generate_series(1, 5000) g, generate_series(1, 4) c",
    "INSERT INTO journeys (id, workspace_id, name, description, state, draft, created_at,"
    " updated_at) VALUES (1, 1, 'j', '', 'live', '{}', now(), now())",
    "INSERT INTO journey_runs (workspace_id, journey_id, version, profile_id, entry_key, state,"
    " node, context, entered_at, updated_at) SELECT 1, 1, 1, md5(g::text)::uuid, '', 'done',"
    " 'x', '{}', now(), now() FROM generate_series(1, 5000) g",
    "INSERT INTO messages (id, workspace_id, profile_id, channel, idempotency_key, origin,"
    " category, priority, status, context, links, attempts, send_after, created_at,"
    " updated_at) SELECT md5('m' || g)::uuid, 1, md5(g::text)::uuid, 'email', 'k' || g, 'api',"
    " 'marketing', 0, 'sent', '{}', '[]', 1, now(), now(), now()"
    " FROM generate_series(1, 5000) g",
    "ANALYZE",
)


async def test_a_delete_by_profile_reads_the_index(fresh_database: Database) -> None:
    await migrations.upgrade(fresh_database)
    someone = uuid.uuid4()
    async with fresh_database.engine.connect() as connection:
        if fresh_database.is_sqlite:
            for table, index in CASCADED.items():
                plan = "\n".join(
                    str(row[-1])
                    for row in await connection.exec_driver_sql(
                        f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE profile_id = ?",
                        (someone.hex,),
                    )
                )
                assert f"INDEX {index} (profile_id=?)" in plan, plan
            return
        for statement in _FILL:
            await connection.exec_driver_sql(statement)
        await connection.commit()
        for table, index in CASCADED.items():
            plan = "\n".join(
                str(row[0])
                for row in await connection.exec_driver_sql(
                    f"EXPLAIN (COSTS OFF) DELETE FROM {table} WHERE profile_id = $1::uuid",
                    (str(someone),),
                )
            )
            assert index in plan and "Seq Scan" not in plan, plan
        await connection.rollback()
