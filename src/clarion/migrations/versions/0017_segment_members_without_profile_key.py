"""Membership rows lose their foreign key to the profile.

PostgreSQL checks a foreign key on insert by locking the referenced row (`FOR KEY SHARE`),
which writes to the profile's page: a baseline of 186,570 members of a 1M-profile
workspace dirtied as many profile rows, 1.2 GB of write-ahead log (143 MB without the key)
and 10.8-11.3 s instead of 6.0-6.2 s (`bench/segments.py`'s trait segment). Every writer
of a membership has just read the canonical profile in its transaction, profiles are
never deleted one by one, and a workspace's deletion reaches its memberships through its
segments. A future deletion of a profile must end its memberships itself, as it must also
correct the segments' member counts, which a cascade would not.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_KEY = "fk_segment_members_profile_id_profiles"


def upgrade() -> None:
    with op.batch_alter_table("segment_members") as batch:
        batch.drop_constraint(_KEY, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("segment_members") as batch:
        batch.create_foreign_key(_KEY, "profiles", ["profile_id"], ["id"], ondelete="CASCADE")
