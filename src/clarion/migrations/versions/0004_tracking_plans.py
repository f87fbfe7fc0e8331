"""Tracking plans, the sources connected to them, and recorded violations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracking_plans",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("unplanned_events", sa.String(8), nullable=False),
        sa.Column("invalid_events", sa.String(8), nullable=False),
        sa.Column("events", JSONDocument, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_tracking_plans_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_plans")),
    )
    op.create_index(
        op.f("ix_tracking_plans_workspace_id_name"),
        "tracking_plans",
        ["workspace_id", "name"],
        unique=True,
    )
    op.create_table(
        "tracking_plan_sources",
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_tracking_plan_sources_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_tracking_plan_sources_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["tracking_plans.id"],
            name=op.f("fk_tracking_plan_sources_plan_id_tracking_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_tracking_plan_sources")),
    )
    op.create_index(op.f("ix_tracking_plan_sources_plan_id"), "tracking_plan_sources", ["plan_id"])
    op.create_table(
        "tracking_violations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(16), nullable=False),
        sa.Column("event_name", sa.String(255), nullable=True),
        sa.Column("plan_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("errors", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_tracking_violations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_violations")),
    )
    op.create_index(
        op.f("ix_tracking_violations_workspace_id_event_id_kind"),
        "tracking_violations",
        ["workspace_id", "event_id", "kind"],
        unique=True,
    )
    op.create_index(
        op.f("ix_tracking_violations_workspace_id_created_at_id"),
        "tracking_violations",
        ["workspace_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_table("tracking_violations")
    op.drop_table("tracking_plan_sources")
    op.drop_table("tracking_plans")
