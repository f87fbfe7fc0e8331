"""Campaigns: broadcasts and the recipients their launch snapshots.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0007"
down_revision = "0006"
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
        "campaigns",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("audience", JSONDocument, nullable=False),
        sa.Column("template_id", BigId, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("topic_id", BigId, nullable=True),
        sa.Column("channel_id", BigId, nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("throttle_per_minute", sa.Integer(), nullable=True),
        sa.Column("goal_event", sa.String(200), nullable=True),
        sa.Column("goal_days", sa.Integer(), nullable=True),
        sa.Column("send_mode", sa.String(8), nullable=True),
        sa.Column("send_at", UTCDateTime(), nullable=True),
        sa.Column("local_date", sa.String(10), nullable=True),
        sa.Column("local_time", sa.String(5), nullable=True),
        sa.Column("launch_at", UTCDateTime(), nullable=True),
        sa.Column("schedule_version", sa.Integer(), nullable=False),
        sa.Column("launched_at", UTCDateTime(), nullable=True),
        sa.Column("template_version_id", BigId, nullable=True),
        sa.Column("snapshot_cursor", sa.String(512), nullable=True),
        sa.Column("snapshot_done", sa.Boolean(), nullable=False),
        sa.Column("audience_size", sa.Integer(), nullable=False),
        sa.Column("slots", JSONDocument, nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.Column("shift_seconds", sa.Float(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _workspace("campaigns"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_campaigns_workspace_id_name"), "campaigns", ["workspace_id", "name"], unique=True
    )
    op.create_index(
        op.f("ix_campaigns_workspace_id_state_id"), "campaigns", ["workspace_id", "state", "id"]
    )

    op.create_table(
        "campaign_recipients",
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("send_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_recipients_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_campaign_recipients_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        _workspace("campaign_recipients"),
        sa.PrimaryKeyConstraint("campaign_id", "profile_id", name=op.f("pk_campaign_recipients")),
    )
    op.create_index(
        op.f("ix_campaign_recipients_campaign_id_state_send_at"),
        "campaign_recipients",
        ["campaign_id", "state", "send_at"],
    )


def downgrade() -> None:
    op.drop_table("campaign_recipients")
    op.drop_table("campaigns")
