"""The rows every processed event writes check fewer foreign keys.

A timeline row (`profile_events`) keeps its foreign key to the profile and loses those to
the event and the workspace; membership rows, membership history and kept segment states
lose theirs to the workspace. Each is written only by code that has just read what it
points at in the same transaction, every deletion that must reach it still does (a
profile's, a segment's), and the event log is append-only. Each foreign key costs a lookup
per inserted row on the busiest tables of the pipeline: 1,000 timeline rows took 92 ms
with three, 51 ms with one (ADR 0004).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# table: (constraint, referred table, column)
_DROPPED = {
    "profile_events": (
        ("fk_profile_events_event_id_events", "events", "event_id"),
        ("fk_profile_events_workspace_id_workspaces", "workspaces", "workspace_id"),
    ),
    "segment_members": (
        ("fk_segment_members_workspace_id_workspaces", "workspaces", "workspace_id"),
    ),
    "segment_changes": (
        ("fk_segment_changes_workspace_id_workspaces", "workspaces", "workspace_id"),
    ),
    "profile_segment_states": (
        ("fk_profile_segment_states_workspace_id_workspaces", "workspaces", "workspace_id"),
    ),
}


def upgrade() -> None:
    for table, dropped in _DROPPED.items():
        with op.batch_alter_table(table) as batch:
            for name, _, _ in dropped:
                batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table, dropped in _DROPPED.items():
        with op.batch_alter_table(table) as batch:
            for name, referred, column in dropped:
                batch.create_foreign_key(name, referred, [column], ["id"], ondelete="CASCADE")
