"""Less urgent ready jobs indexed by due time, so a worker finds those that waited too long.

Under a steady stream of urgent jobs (events), a worker would always find one to claim
and never reach a lower priority; once a second the worker moves one such job that has
waited past `STARVED_AFTER` to the top (core/jobs/worker.py). This index serves that look
(oldest first) without reading the urgent jobs, which it leaves out.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_WAITING = "state = 'ready' AND priority > 0"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_waiting_run_at",
        "jobs",
        ["run_at", "id"],
        sqlite_where=sa.text(_WAITING),
        postgresql_where=sa.text(_WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_waiting_run_at", table_name="jobs")
