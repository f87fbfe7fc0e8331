"""Journeys: drawn graphs and their published versions.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _workspace(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("draft", JSONDocument, nullable=False),
        sa.Column("live_version", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _workspace("journeys"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journeys")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_journeys_workspace_id_name"), "journeys", ["workspace_id", "name"], unique=True
    )
    op.create_index(
        op.f("ix_journeys_workspace_id_state_id"), "journeys", ["workspace_id", "state", "id"]
    )

    op.create_table(
        "journey_versions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", BigId, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("graph", JSONDocument, nullable=False),
        sa.Column("plan", JSONDocument, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journeys.id"],
            name=op.f("fk_journey_versions_journey_id_journeys"),
            ondelete="CASCADE",
        ),
        _workspace("journey_versions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_versions")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_journey_versions_journey_id_number"),
        "journey_versions",
        ["journey_id", "number"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("journey_versions")
    op.drop_table("journeys")
