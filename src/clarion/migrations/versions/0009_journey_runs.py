"""Journey runs and their transitions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_LIVE = sa.text("state IN ('active', 'waiting')")


def _workspace(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def _journey(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["journey_id"],
        ["journeys.id"],
        name=op.f(f"fk_{table}_journey_id_journeys"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "journey_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", BigId, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("entry_key", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("context", JSONDocument, nullable=False),
        sa.Column("wake_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("converted_at", UTCDateTime(), nullable=True),
        _workspace("journey_runs"),
        _journey("journey_runs"),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_journey_runs_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_runs")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_journey_runs_live_key",
        "journey_runs",
        ["journey_id", "profile_id", "entry_key"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index(
        op.f("ix_journey_runs_workspace_id_profile_id_state"),
        "journey_runs",
        ["workspace_id", "profile_id", "state"],
    )
    op.create_index(
        op.f("ix_journey_runs_journey_id_state_node"),
        "journey_runs",
        ["journey_id", "state", "node"],
    )

    op.create_table(
        "journey_transitions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", BigId, nullable=False),
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("from_node", sa.String(64), nullable=True),
        sa.Column("to_node", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        _workspace("journey_transitions"),
        _journey("journey_transitions"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["journey_runs.id"],
            name=op.f("fk_journey_transitions_run_id_journey_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_transitions")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_journey_transitions_run_id_id"), "journey_transitions", ["run_id", "id"]
    )
    op.create_index(
        op.f("ix_journey_transitions_journey_id_to_node_at"),
        "journey_transitions",
        ["journey_id", "to_node", "at"],
    )


def downgrade() -> None:
    op.drop_table("journey_transitions")
    op.drop_table("journey_runs")
