"""The jobs table (durable work, written in the caller's transaction) and recurring jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime

LIVE = "state IN ('ready', 'running')"


class Job(Base):
    """One unit of durable work: ready (waiting for `run_at`), running (leased) or dead.

    A job that succeeds is deleted. `dedupe_key` is unique among live jobs of a kind in a
    workspace; jobs sharing a `serial_key` run one at a time, in the order they were enqueued.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # What workers claim: ready jobs, most urgent and oldest first.
        Index(
            None,
            "priority",
            "run_at",
            "id",
            sqlite_where=text("state = 'ready'"),
            postgresql_where=text("state = 'ready'"),
        ),
        # Less urgent jobs by how long they have waited: those to move up (worker.py).
        Index(
            "ix_jobs_waiting_run_at",
            "run_at",
            "id",
            sqlite_where=text("state = 'ready' AND priority > 0"),
            postgresql_where=text("state = 'ready' AND priority > 0"),
        ),
        # Leases to take over when their worker has gone.
        Index(
            None,
            "lease_expires_at",
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
        Index(
            "ix_jobs_live_dedupe_key",
            "workspace_id",
            "kind",
            "dedupe_key",
            unique=True,
            sqlite_where=text(f"{LIVE} AND dedupe_key IS NOT NULL"),
            postgresql_where=text(f"{LIVE} AND dedupe_key IS NOT NULL"),
        ),
        Index(
            "ix_jobs_live_serial_key",
            "workspace_id",
            "serial_key",
            "id",
            sqlite_where=text(f"{LIVE} AND serial_key IS NOT NULL"),
            postgresql_where=text(f"{LIVE} AND serial_key IS NOT NULL"),
        ),
        Index(None, "workspace_id", "state", "id"),
        # Never reuse a deleted job's id on SQLite: ids order serial keys and name jobs.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(SmallInteger)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(255))
    serial_key: Mapped[str | None] = mapped_column(String(255))
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecurringJob(Base):
    """A job enqueued on a cron schedule (UTC): exactly once per tick, however many workers."""

    __tablename__ = "recurring_jobs"
    __table_args__ = (UniqueConstraint("workspace_id", "name"), Index(None, "next_run_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    cron: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    priority: Mapped[int] = mapped_column(SmallInteger)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
