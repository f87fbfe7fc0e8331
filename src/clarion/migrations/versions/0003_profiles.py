"""Profiles: identities, timeline index, trait history, merges, accounts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _workspace(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def _profile(table: str, column: str = "profile_id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["profiles.id"], name=op.f(f"fk_{table}_{column}_profiles"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("canonical_id", sa.Uuid(), nullable=True),
        sa.Column("traits", JSONDocument, nullable=False),
        sa.Column("trait_times", JSONDocument, nullable=False),
        sa.Column("computed", JSONDocument, nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=True),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _workspace("profiles"),
        sa.ForeignKeyConstraint(
            ["canonical_id"], ["profiles.id"], name=op.f("fk_profiles_canonical_id_profiles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
    )
    op.create_index(
        op.f("ix_profiles_workspace_id_created_at_id"),
        "profiles",
        ["workspace_id", "created_at", "id"],
    )
    op.create_index(op.f("ix_profiles_canonical_id"), "profiles", ["canonical_id"])

    op.create_table(
        "profile_identities",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("event_id", BigId, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        _workspace("profile_identities"),
        _profile("profile_identities"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_identities")),
    )
    op.create_index(
        op.f("ix_profile_identities_workspace_id_kind_value"),
        "profile_identities",
        ["workspace_id", "kind", "value"],
        unique=True,
    )
    op.create_index(op.f("ix_profile_identities_profile_id"), "profile_identities", ["profile_id"])

    op.create_table(
        "profile_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        _workspace("profile_events"),
        _profile("profile_events"),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_profile_events_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_events")),
    )
    op.create_index(
        op.f("ix_profile_events_workspace_id_event_id"),
        "profile_events",
        ["workspace_id", "event_id"],
        unique=True,
    )
    op.create_index(
        op.f("ix_profile_events_profile_id_timestamp_event_id"),
        "profile_events",
        ["profile_id", "timestamp", "event_id"],
    )

    op.create_table(
        "profile_trait_changes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("old_value", JSONDocument, nullable=True),
        sa.Column("new_value", JSONDocument, nullable=True),
        sa.Column("event_id", BigId, nullable=True),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        _workspace("profile_trait_changes"),
        _profile("profile_trait_changes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_trait_changes")),
    )
    op.create_index(
        op.f("ix_profile_trait_changes_profile_id_id"),
        "profile_trait_changes",
        ["profile_id", "id"],
    )

    op.create_table(
        "profile_merges",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("survivor_id", sa.Uuid(), nullable=False),
        sa.Column("absorbed_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("identity_kind", sa.String(16), nullable=True),
        sa.Column("identity_value", sa.String(255), nullable=True),
        sa.Column("event_id", BigId, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("undone_at", UTCDateTime(), nullable=True),
        _workspace("profile_merges"),
        _profile("profile_merges", "survivor_id"),
        _profile("profile_merges", "absorbed_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_merges")),
    )
    op.create_index(
        op.f("ix_profile_merges_survivor_id_id"), "profile_merges", ["survivor_id", "id"]
    )
    op.create_index(
        op.f("ix_profile_merges_absorbed_id_id"), "profile_merges", ["absorbed_id", "id"]
    )
    op.create_index(
        op.f("ix_profile_merges_workspace_id_identity_kind_identity_value"),
        "profile_merges",
        ["workspace_id", "identity_kind", "identity_value"],
    )

    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.String(255), nullable=False),
        sa.Column("traits", JSONDocument, nullable=False),
        sa.Column("trait_times", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _workspace("accounts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_index(
        op.f("ix_accounts_workspace_id_group_id"),
        "accounts",
        ["workspace_id", "group_id"],
        unique=True,
    )

    op.create_table(
        "profile_accounts",
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        _workspace("profile_accounts"),
        _profile("profile_accounts"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_profile_accounts_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", "account_id", name=op.f("pk_profile_accounts")),
    )
    op.create_index(op.f("ix_profile_accounts_account_id"), "profile_accounts", ["account_id"])


def downgrade() -> None:
    op.drop_table("profile_accounts")
    op.drop_table("accounts")
    op.drop_table("profile_merges")
    op.drop_table("profile_trait_changes")
    op.drop_table("profile_events")
    op.drop_table("profile_identities")
    op.drop_table("profiles")
