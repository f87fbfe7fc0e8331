"""Workspaces say which inbox credentials are current, so a workspace can rotate its own.

The inbox key and secret are derived from the app's secret key; until now the only way to
change a workspace's was to change that key, which would also make every sealed channel
credential unreadable. Version 0 derives them as before, so existing apps keep working.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as table:
        table.add_column(
            sa.Column("inbox_secret_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("workspaces") as table:
        table.drop_column("inbox_secret_version")
