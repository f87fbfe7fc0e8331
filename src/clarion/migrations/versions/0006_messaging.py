"""Messaging: channels, subscription topics, consent, suppressions, templates and their
versions, frequency caps, messages and their events.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messaging_channels",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("settings", JSONDocument, nullable=False),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("rate_per_second", sa.Float(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_messaging_channels_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_channels")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_messaging_channels_workspace_id_name"),
        "messaging_channels",
        ["workspace_id", "name"],
        unique=True,
    )

    op.create_table(
        "subscription_topics",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("default_state", sa.String(16), nullable=False),
        sa.Column("double_opt_in", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_subscription_topics_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_topics")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_subscription_topics_workspace_id_name"),
        "subscription_topics",
        ["workspace_id", "name"],
        unique=True,
    )

    op.create_table(
        "consents",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("topic_id", BigId, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_consents_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["subscription_topics.id"],
            name=op.f("fk_consents_topic_id_subscription_topics"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_consents_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    op.create_index(
        op.f("ix_consents_workspace_id_profile_id_scope"),
        "consents",
        ["workspace_id", "profile_id", "scope"],
        unique=True,
    )

    op.create_table(
        "suppressions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_suppressions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
    )
    op.create_index(
        op.f("ix_suppressions_workspace_id_channel_address"),
        "suppressions",
        ["workspace_id", "channel", "address"],
        unique=True,
    )

    op.create_table(
        "message_templates",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("topic_id", BigId, nullable=True),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("archived_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["subscription_topics.id"],
            name=op.f("fk_message_templates_topic_id_subscription_topics"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_message_templates_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_templates")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_message_templates_workspace_id_name"),
        "message_templates",
        ["workspace_id", "name"],
        unique=True,
    )

    op.create_table(
        "template_versions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("template_id", BigId, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["message_templates.id"],
            name=op.f("fk_template_versions_template_id_message_templates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_template_versions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
    )
    op.create_index(
        op.f("ix_template_versions_template_id_version"),
        "template_versions",
        ["template_id", "version"],
        unique=True,
    )

    op.create_table(
        "frequency_caps",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("max_messages", sa.Integer(), nullable=False),
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_frequency_caps_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frequency_caps")),
    )

    op.create_table(
        "messaging_policies",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("quiet_hours_start", sa.String(5), nullable=True),
        sa.Column("quiet_hours_end", sa.String(5), nullable=True),
        sa.Column("quiet_channels", JSONDocument, nullable=False),
        sa.Column("default_timezone", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_messaging_policies_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_messaging_policies")),
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("channel_id", BigId, nullable=True),
        sa.Column("template_id", BigId, nullable=True),
        sa.Column("template_version_id", BigId, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("origin_id", sa.String(64), nullable=True),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("topic_id", BigId, nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(2048), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("context", JSONDocument, nullable=False),
        sa.Column("content", JSONDocument, nullable=True),
        sa.Column("links", JSONDocument, nullable=False),
        sa.Column("provider_id", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("send_after", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=True),
        sa.Column("clicked_at", UTCDateTime(), nullable=True),
        sa.Column("converted_at", UTCDateTime(), nullable=True),
        sa.Column("read_at", UTCDateTime(), nullable=True),
        sa.Column("archived_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["messaging_channels.id"],
            name=op.f("fk_messages_channel_id_messaging_channels"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_messages_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["message_templates.id"],
            name=op.f("fk_messages_template_id_message_templates"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_version_id"],
            ["template_versions.id"],
            name=op.f("fk_messages_template_version_id_template_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_messages_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(op.f("ix_messages_profile_id_sent_at"), "messages", ["profile_id", "sent_at"])
    op.create_index(op.f("ix_messages_provider_id"), "messages", ["provider_id"])
    op.create_index(
        op.f("ix_messages_workspace_id_idempotency_key"),
        "messages",
        ["workspace_id", "idempotency_key"],
        unique=True,
    )
    op.create_index(
        op.f("ix_messages_workspace_id_origin_origin_id"),
        "messages",
        ["workspace_id", "origin", "origin_id"],
    )
    op.create_index(
        op.f("ix_messages_workspace_id_profile_id_created_at"),
        "messages",
        ["workspace_id", "profile_id", "created_at"],
    )

    op.create_table(
        "message_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("detail", JSONDocument, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_message_events_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_events")),
    )
    op.create_index(op.f("ix_message_events_message_id_id"), "message_events", ["message_id", "id"])
    op.create_index(
        op.f("ix_message_events_workspace_id_at"), "message_events", ["workspace_id", "at"]
    )


def downgrade() -> None:
    for table in (
        "message_events",
        "messages",
        "messaging_policies",
        "frequency_caps",
        "template_versions",
        "message_templates",
        "suppressions",
        "consents",
        "subscription_topics",
        "messaging_channels",
    ):
        op.drop_table(table)
