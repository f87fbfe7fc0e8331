"""Membership rows and membership history lose their foreign key to the segment.

PostgreSQL checks a foreign key once per inserted row, by locking the referenced row
(`FOR KEY SHARE`): a first touch of 5,000 customers checked the segments 64,000 times,
on the 50 rows every concurrent run also updates (`member_count`), so each check had to
join a multixact of the other runs' locks. A writer of memberships now holds the
segments it writes once per batch instead (`membership.apply_changes`, `FOR KEY SHARE`
in id order) and leaves out those deleted meanwhile; deleting a segment deletes its
members and history itself (`service.delete_segment`), as it locks the segment first.
Workspaces are never deleted by Clarion; a deletion by hand must delete these rows by
`workspace_id` as well.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_KEYS = {
    "segment_members": "fk_segment_members_segment_id_segments",
    "segment_changes": "fk_segment_changes_segment_id_segments",
}


def upgrade() -> None:
    for table, key in _KEYS.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(key, type_="foreignkey")


def downgrade() -> None:
    for table, key in _KEYS.items():
        # Rows of segments deleted without the key would refuse it: they go first.
        op.execute(f"DELETE FROM {table} WHERE segment_id NOT IN (SELECT id FROM segments)")  # noqa: S608 - constant names
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(key, "segments", ["segment_id"], ["id"], ondelete="CASCADE")
