"""The index on `profiles.canonical_id` holds merged-away rows only.

Nearly every profile is canonical (`canonical_id` NULL), so a full index made every value
look like it matched most of the table: once SQLite has statistics it read "id IN (...) OR
canonical_id IN (...)" (a merge tree's rows) as a scan of every profile. A lookup by
canonical id implies NOT NULL, so the partial index serves every such query, on both
databases, and is a fraction of the size.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_MERGED = "canonical_id IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_profiles_canonical_id", table_name="profiles")
    op.create_index(
        "ix_profiles_canonical_id",
        "profiles",
        ["canonical_id"],
        sqlite_where=sa.text(_MERGED),
        postgresql_where=sa.text(_MERGED),
    )


def downgrade() -> None:
    op.drop_index("ix_profiles_canonical_id", table_name="profiles")
    op.create_index("ix_profiles_canonical_id", "profiles", ["canonical_id"])
