"""Segments: rules, members, membership history, sizes, per-profile aggregates, RFM.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _workspace(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def _segment(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["segment_id"],
        ["segments.id"],
        name=op.f(f"fk_{table}_segment_id_segments"),
        ondelete="CASCADE",
    )


def _profile(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["profile_id"],
        ["profiles.id"],
        name=op.f(f"fk_{table}_profile_id_profiles"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("rule", JSONDocument, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(64), nullable=True),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("recomputed_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _workspace("segments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_segments_workspace_id_name"), "segments", ["workspace_id", "name"], unique=True
    )
    op.create_index(
        op.f("ix_segments_workspace_id_template"),
        "segments",
        ["workspace_id", "template"],
        unique=True,
    )

    op.create_table(
        "segment_members",
        sa.Column("segment_id", BigId, nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        _segment("segment_members"),
        _profile("segment_members"),
        _workspace("segment_members"),
        sa.PrimaryKeyConstraint("segment_id", "profile_id", name=op.f("pk_segment_members")),
    )
    op.create_index(
        op.f("ix_segment_members_workspace_id_profile_id"),
        "segment_members",
        ["workspace_id", "profile_id"],
    )

    op.create_table(
        "segment_changes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("segment_id", BigId, nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        _workspace("segment_changes"),
        _segment("segment_changes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_changes")),
    )
    op.create_index(
        op.f("ix_segment_changes_segment_id_id"), "segment_changes", ["segment_id", "id"]
    )
    op.create_index(
        op.f("ix_segment_changes_profile_id_id"), "segment_changes", ["profile_id", "id"]
    )

    op.create_table(
        "segment_sizes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("segment_id", BigId, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("entered", sa.Integer(), nullable=False),
        sa.Column("exited", sa.Integer(), nullable=False),
        _workspace("segment_sizes"),
        _segment("segment_sizes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_sizes")),
    )
    op.create_index(op.f("ix_segment_sizes_segment_id_at"), "segment_sizes", ["segment_id", "at"])

    op.create_table(
        "profile_segment_states",
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("aggregates", JSONDocument, nullable=False),
        sa.Column("specs_version", sa.String(64), nullable=False),
        sa.Column("next_changes", JSONDocument, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _profile("profile_segment_states"),
        _workspace("profile_segment_states"),
        sa.PrimaryKeyConstraint("profile_id", name=op.f("pk_profile_segment_states")),
    )

    op.create_table(
        "segment_rfm_boundaries",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("recency", JSONDocument, nullable=False),
        sa.Column("frequency", JSONDocument, nullable=False),
        sa.Column("monetary", JSONDocument, nullable=False),
        sa.Column("monetary_percentiles", JSONDocument, nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        _workspace("segment_rfm_boundaries"),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_segment_rfm_boundaries")),
    )


def downgrade() -> None:
    op.drop_table("segment_rfm_boundaries")
    op.drop_table("profile_segment_states")
    op.drop_table("segment_sizes")
    op.drop_table("segment_changes")
    op.drop_table("segment_members")
    op.drop_table("segments")
