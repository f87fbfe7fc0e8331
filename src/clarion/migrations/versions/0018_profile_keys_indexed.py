"""Rows that name a profile by a cascading foreign key are indexed by it, first.

A person's erasure (`profiles/erasure.py`) deletes their profile rows, and the cascade
then deletes from every table whose foreign key names the profile: one `DELETE ... WHERE
profile_id = $1` per table and profile row. Consents, campaign recipients and journey runs
had no index starting with `profile_id` (theirs start with the workspace, the campaign or
the journey), so each of those deletes read the whole table, on both databases, inside the
erasure's transaction and with the profile rows locked. Messages already have one
(`profile_id`, `sent_at`); the tables below messages and runs are indexed by their keys.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_TABLES = ("consents", "campaign_recipients", "journey_runs")


def upgrade() -> None:
    for table in _TABLES:
        op.create_index(f"ix_{table}_profile_id", table, ["profile_id"])


def downgrade() -> None:
    for table in _TABLES:
        op.drop_index(f"ix_{table}_profile_id", table_name=table)
