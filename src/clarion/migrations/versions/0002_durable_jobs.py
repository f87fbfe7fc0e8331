"""Durable jobs and recurring jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from clarion.core.database import BigId, JSONDocument, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LIVE = "state IN ('ready', 'running')"


def _partial(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("payload", JSONDocument, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=True),
        sa.Column("serial_key", sa.String(255), nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_jobs_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sqlite_autoincrement=True,  # a finished job's id is never given to another
    )
    op.create_index(
        op.f("ix_jobs_priority_run_at_id"),
        "jobs",
        ["priority", "run_at", "id"],
        **_partial("state = 'ready'"),
    )
    op.create_index(
        op.f("ix_jobs_lease_expires_at"),
        "jobs",
        ["lease_expires_at"],
        **_partial("state = 'running'"),
    )
    op.create_index(
        "ix_jobs_live_dedupe_key",
        "jobs",
        ["workspace_id", "kind", "dedupe_key"],
        unique=True,
        **_partial(f"{_LIVE} AND dedupe_key IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_live_serial_key",
        "jobs",
        ["workspace_id", "serial_key", "id"],
        **_partial(f"{_LIVE} AND serial_key IS NOT NULL"),
    )
    op.create_index(op.f("ix_jobs_workspace_id_state_id"), "jobs", ["workspace_id", "state", "id"])
    op.create_table(
        "recurring_jobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("cron", sa.String(100), nullable=False),
        sa.Column("payload", JSONDocument, nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_recurring_jobs_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recurring_jobs")),
        sa.UniqueConstraint(
            "workspace_id", "name", name=op.f("uq_recurring_jobs_workspace_id_name")
        ),
    )
    op.create_index(op.f("ix_recurring_jobs_next_run_at"), "recurring_jobs", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("recurring_jobs")
    op.drop_table("jobs")
