"""An archived journey's name is free again: the unique name index covers the others only.

Journeys are archived, never deleted, so a marketer who archived "Welcome" could never make
another "Welcome".

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_INDEX = "ix_journeys_workspace_id_name"
_NOT_ARCHIVED = sa.text("state <> 'archived'")


def upgrade() -> None:
    op.drop_index(_INDEX, table_name="journeys")
    op.create_index(
        _INDEX,
        "journeys",
        ["workspace_id", "name"],
        unique=True,
        sqlite_where=_NOT_ARCHIVED,
        postgresql_where=_NOT_ARCHIVED,
    )


def downgrade() -> None:
    # Archived journeys that share a live one's name keep it with a suffix: the full index
    # could not be made over them.
    op.execute(
        "UPDATE journeys SET name = name || ' (archived ' || id || ')' "
        "WHERE state = 'archived' AND EXISTS (SELECT 1 FROM journeys other "
        "WHERE other.workspace_id = journeys.workspace_id AND other.name = journeys.name "
        "AND other.id <> journeys.id)"
    )
    op.drop_index(_INDEX, table_name="journeys")
    op.create_index(_INDEX, "journeys", ["workspace_id", "name"], unique=True)
