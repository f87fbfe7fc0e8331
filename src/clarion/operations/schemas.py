"""What the jobs console answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from clarion.core.jobs.service import JobState


class JobRead(BaseModel):
    """A durable job: waiting (`ready`), leased by a worker (`running`) or given up (`dead`)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    state: JobState
    payload: dict[str, Any]
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    serial_key: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class JobPage(BaseModel):
    """A page of jobs, newest first; pass `next_cursor` back as `cursor` for the next."""

    items: list[JobRead]
    next_cursor: str | None
