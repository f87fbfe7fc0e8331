"""Timeline rows lose their foreign key to the profile.

PostgreSQL checked the key once per timeline row inserted, by locking the profile's row
(`FOR KEY SHARE`): 58,280 checks and about 0.5 s of the server's time in a first touch of
5,000 customers (docs/benchmarks.md, session 27). Every writer of timeline rows now holds
its profiles once per batch: the pipeline locks them to apply events, and
`profiles.service.apply_own_events` holds them (`FOR KEY SHARE`, in id order) before it
writes Clarion's own events, refusing the batch (to be retried) when one is gone. A
person's erasure deletes their timeline rows itself, after their profiles, so that it
waits for those writers and takes what they wrote; workspaces are never deleted by Clarion
(a deletion by hand must delete these rows by `workspace_id` as well).

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_KEY = "fk_profile_events_profile_id_profiles"


def upgrade() -> None:
    with op.batch_alter_table("profile_events") as batch:
        batch.drop_constraint(_KEY, type_="foreignkey")


def downgrade() -> None:
    # Rows of profiles deleted without the key would refuse it: they go first.
    op.execute("DELETE FROM profile_events WHERE profile_id NOT IN (SELECT id FROM profiles)")
    with op.batch_alter_table("profile_events") as batch:
        batch.create_foreign_key(_KEY, "profiles", ["profile_id"], ["id"], ondelete="CASCADE")
