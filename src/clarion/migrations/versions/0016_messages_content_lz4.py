"""Kept email HTML is compressed with lz4 on PostgreSQL.

Delivery keeps each email's rendered HTML (`messages.content`, 15-20 KB) when its template
has a "view in browser" link, and PostgreSQL compresses such values when it stores them:
with its default (pglz) about 47 us of the server's CPU for one 17 KB value, with lz4 3 us,
for a similar size. Measured at 2 cores: PostgreSQL spent ~0.5 ms of CPU per campaign email.
Existing rows keep their compression; the column's new values use lz4. Nothing on SQLite,
and nothing where the server has no lz4 (built without it, or before PostgreSQL 14).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_HAS_LZ4 = (
    "SELECT count(*) FROM pg_settings"
    " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
)


def _compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.execute(sa.text(_HAS_LZ4)).scalar():
        return
    op.execute(f"ALTER TABLE messages ALTER COLUMN content SET COMPRESSION {method}")


def upgrade() -> None:
    _compression("lz4")


def downgrade() -> None:
    _compression("pglz")
