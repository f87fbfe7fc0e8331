"""Workers: claim due jobs under a lease, run them, retry with backoff, park the dead.

A claimed job is `running` with `lease_owner` set until `lease_expires_at`; its worker
extends the lease while it runs. A job that succeeds is deleted, in the handler's own
transaction when the handler calls `JobContext.complete(session)` (then its database effects
and its completion commit together: exactly once), otherwise right after it returns. A job
that raises is retried after an exponential backoff with jitter, and is parked as `dead` after
`max_attempts`. When a worker dies, its leases expire and any worker takes the jobs back.

Jobs sharing a `serial_key` run one at a time in enqueue order: only the oldest live job of a
key can be claimed. On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`, so any number of
workers never hold the same job; on SQLite the single writer serializes claims.
More urgent jobs (a lower `priority`) are claimed first; so that a steady stream of them
cannot keep the others waiting for ever, once a second each worker moves one of its kinds'
jobs that has waited `STARVED_AFTER` past its due time to the top priority.
All times come from the injected clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Integer, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import Clock
from clarion.core.database import BigId, Database, JSONDocument, UTCDateTime
from clarion.core.jobs.queue import BACKOFF_BASE, BACKOFF_CAP
from clarion.core.jobs.recurring import enqueue_due_recurring_jobs
from clarion.core.jobs.wakeup import Wakeup, listen_postgres

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_TIMEOUT = timedelta(minutes=5)


class LeaseLost(RuntimeError):
    """The job's lease passed to another worker: this run's work must not commit."""


class PermanentFailure(Exception):
    """Raised by a handler for a job that can never succeed: it goes dead at once."""


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job as its handler sees it; `attempts` counts this run."""

    id: int
    workspace_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    serial_key: str | None


@dataclass
class JobContext:
    """What a handler gets: its job, the database and clock, and a way to finish atomically."""

    job: ClaimedJob
    database: Database
    clock: Clock
    owner: str
    completed: bool = False

    async def complete(self, session: AsyncSession) -> None:
        """Delete the job in the handler's write transaction, so its effects and its completion
        commit together; LeaseLost if another worker has taken the job meanwhile."""
        result = await session.execute(
            text("DELETE FROM jobs WHERE id = :id AND lease_owner = :owner AND state = 'running'"),
            {"id": self.job.id, "owner": self.owner},
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"job {self.job.id} is no longer leased to {self.owner}")
        self.completed = True


Handler = Callable[[JobContext], Awaitable[None]]


@dataclass(frozen=True)
class JobKind:
    """A kind of job and how to run it."""

    name: str
    handler: Handler
    timeout: timedelta = DEFAULT_TIMEOUT


@dataclass
class Registry:
    """The job kinds a worker can run."""

    kinds: dict[str, JobKind] = field(default_factory=dict)

    def add(self, name: str, handler: Handler, *, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
        """Register `handler` for jobs of kind `name`."""
        if name in self.kinds:
            raise ValueError(f"job kind {name!r} is registered twice")
        self.kinds[name] = JobKind(name, handler, timeout)

    def select(self, only: Iterable[str] = (), skip: Iterable[str] = ()) -> Registry:
        """The kinds in `only` (every kind when empty) less those in `skip`, so workers can
        be dedicated to some work (delivery, say) that others' load must not hold back;
        ValueError naming the kinds this registry does not have, or if none is left."""
        wanted, unwanted = set(only), set(skip)
        unknown = sorted((wanted | unwanted) - set(self.kinds))
        if unknown:
            known = ", ".join(sorted(self.kinds))
            raise ValueError(f"unknown job kinds: {', '.join(unknown)} (known: {known})")
        kept = {
            name: kind
            for name, kind in self.kinds.items()
            if (not wanted or name in wanted) and name not in unwanted
        }
        if not kept:
            raise ValueError("no job kind is left to run")
        return Registry(kept)


def backoff(attempts: int, rng: random.Random) -> timedelta:
    """The wait before retry number `attempts`: exponential, capped, with full jitter above
    half of it (so retries of many jobs spread out but never come back at once)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (1 << min(max(attempts - 1, 0), 30)))
    return ceiling * rng.uniform(0.5, 1.0)


_CLAIMED_COLUMNS: dict[str, Any] = {
    "id": BigId,
    "workspace_id": Integer,
    "kind": String,
    "payload": JSONDocument,
    "attempts": Integer,
    "max_attempts": Integer,
    "serial_key": String,
}
_CLAIM = """
UPDATE jobs SET state = 'running', lease_owner = :owner, lease_expires_at = :expires,
    attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM jobs AS job
    WHERE job.state = 'ready' AND job.run_at <= :now AND job.kind IN :kinds
      AND (job.serial_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM jobs AS earlier
          WHERE earlier.workspace_id = job.workspace_id AND earlier.serial_key = job.serial_key
            AND earlier.id < job.id AND earlier.state IN ('ready', 'running')))
    ORDER BY job.priority, job.run_at, job.id
    LIMIT :limit {lock}
)
RETURNING id, workspace_id, kind, payload, attempts, max_attempts, serial_key
"""
# A ready job of a lower priority that has waited this long past its due time goes to the
# top priority: under a steady stream of more urgent work it would otherwise never run.
STARVED_AFTER = timedelta(seconds=30)
_AGE_WINDOW = 100  # the longest-waiting jobs looked at per pass: a bounded index scan
_AGE = """
UPDATE jobs SET priority = 0, updated_at = :now
WHERE state = 'ready' AND id IN (
    SELECT id FROM (
        SELECT id, kind, run_at FROM jobs
        WHERE state = 'ready' AND priority > 0 AND run_at <= :starved
        ORDER BY run_at, id
        LIMIT :window
    ) AS waiting
    WHERE waiting.kind IN :kinds
    ORDER BY waiting.run_at, waiting.id
    LIMIT 1
)
"""
_REAP = """
UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'ready' END,
    lease_owner = NULL, lease_expires_at = NULL, run_at = :now, updated_at = :now,
    last_error = 'lease expired: its worker stopped without finishing'
WHERE state = 'running' AND lease_expires_at <= :now
"""


class Worker:
    """Runs jobs of the registered kinds, up to `concurrency` at once, until cancelled."""

    def __init__(
        self,
        database: Database,
        registry: Registry,
        *,
        clock: Clock,
        concurrency: int = 4,
        lease: timedelta = DEFAULT_LEASE,
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.database = database
        self.registry = registry
        self.clock = clock
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._running: set[asyncio.Task[None]] = set()
        self._maintained_at: datetime | None = None
        self.processed = 0  # jobs finished (succeeded or failed), for metrics and tests

    async def run(self) -> None:
        """Work until cancelled; on cancellation, running jobs are cancelled and handed back
        (if the database cannot be reached, their leases expire and any worker takes them)."""
        wakeup = Wakeup()
        background = [asyncio.create_task(self._heartbeat())]
        if not self.database.is_sqlite:
            background.append(
                asyncio.create_task(listen_postgres(_asyncpg_dsn(self.database), wakeup))
            )

        def finished(task: asyncio.Task[None]) -> None:
            self._running.discard(task)
            wakeup.notify()  # a slot is free

        try:
            while True:
                claimed = await self._maintain_and_claim()
                for job in claimed:
                    task = asyncio.create_task(self._execute(job))
                    self._running.add(task)
                    task.add_done_callback(finished)
                if claimed and len(self._running) < self.concurrency:
                    continue  # there may be more due right now
                await wakeup.wait(self.poll_interval)
        finally:
            for task in [*background, *self._running]:
                task.cancel()
            for task in [*background, *self._running]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await asyncio.shield(self._release_leases())

    async def _release_leases(self) -> None:
        """Hand back the jobs this worker was running when it was stopped: their work rolled
        back, so they are ready again at once, and the interrupted run does not count."""
        with contextlib.suppress(Exception):  # unreachable database: the leases expire instead
            async with self.database.write_session() as session:
                await session.execute(
                    text(
                        "UPDATE jobs SET state = 'ready', lease_owner = NULL, "
                        "lease_expires_at = NULL, attempts = attempts - 1, updated_at = :now "
                        "WHERE lease_owner = :owner AND state = 'running'"
                    ).bindparams(*_times("now")),
                    {"now": self.clock.now(), "owner": self.owner},
                )
                await session.commit()

    async def drain(self, *, rounds: int = 1000) -> int:
        """Run every job due now, one claim batch after another, until none is left; how many
        ran. For tests and one-off commands: the clock decides what is due."""
        ran = 0
        for _ in range(rounds):
            claimed = await self._maintain_and_claim()
            if not claimed:
                return ran
            await asyncio.gather(*(self._execute(job) for job in claimed))
            ran += len(claimed)
        return ran

    async def _maintain_and_claim(self) -> list[ClaimedJob]:
        """Claim what fits in the free slots; once per poll interval, also take back expired
        leases and enqueue due recurring jobs (kept off the claim path: it runs per batch)."""
        free = self.concurrency - len(self._running)
        now = self.clock.now()
        maintain = self._maintained_at is None or (
            (now - self._maintained_at).total_seconds() >= self.poll_interval
        )
        if free <= 0 and not maintain:
            return []
        async with self.database.write_session() as session:
            if maintain:
                self._maintained_at = now
                await session.execute(text(_REAP).bindparams(*_times("now")), {"now": now})
                await enqueue_due_recurring_jobs(session, now=now)
                await self._promote_starved(session, now)
            claimed = await self._claim(session, free, now) if free > 0 else []
            await session.commit()
        return claimed

    async def _promote_starved(self, session: AsyncSession, now: datetime) -> None:
        """Move one job of this worker's kinds that more urgent work has kept waiting for
        `STARVED_AFTER` to the top priority, so every kind makes progress under load."""
        if not self.registry.kinds:
            return
        statement = text(_AGE).bindparams(
            bindparam("kinds", expanding=True), *_times("now", "starved")
        )
        await session.execute(
            statement,
            {
                "now": now,
                "starved": now - STARVED_AFTER,
                "kinds": list(self.registry.kinds),
                "window": _AGE_WINDOW,
            },
        )

    async def _claim(self, session: AsyncSession, limit: int, now: datetime) -> list[ClaimedJob]:
        if not self.registry.kinds:
            return []
        lock = "" if self.database.is_sqlite else "FOR UPDATE SKIP LOCKED"
        statement = (
            text(_CLAIM.format(lock=lock))
            .bindparams(bindparam("kinds", expanding=True), *_times("now", "expires"))
            .columns(**_CLAIMED_COLUMNS)
        )
        result = await session.execute(
            statement,
            {
                "owner": self.owner,
                "expires": now + self.lease,
                "now": now,
                "kinds": list(self.registry.kinds),
                "limit": limit,
            },
        )
        jobs = [ClaimedJob(**row._mapping) for row in result]
        return sorted(jobs, key=lambda job: job.id)

    async def _execute(self, job: ClaimedJob) -> None:
        kind = self.registry.kinds[job.kind]
        context = JobContext(job, self.database, self.clock, self.owner)
        try:
            async with asyncio.timeout(kind.timeout.total_seconds()):
                await kind.handler(context)
            if not context.completed:
                async with self.database.write_session() as session:
                    await context.complete(session)
                    await session.commit()
        except LeaseLost:
            log.warning("job %s (%s) lost its lease; its work was rolled back", job.id, job.kind)
        except Exception as exc:
            await self._fail(job, exc)
        finally:
            self.processed += 1

    async def _fail(self, job: ClaimedJob, exc: Exception) -> None:
        error = "".join(traceback.format_exception_only(exc)).strip()[:4000]
        dead = isinstance(exc, PermanentFailure) or job.attempts >= job.max_attempts
        now = self.clock.now()
        # The traceback of an unexpected error on its first attempt and its last, not on
        # each of up to 20 retries between; a PermanentFailure says all in its message.
        traced = not isinstance(exc, PermanentFailure) and (job.attempts == 1 or dead)
        log.log(
            logging.ERROR if dead else logging.WARNING,
            "job %s (%s) failed on attempt %s/%s%s: %s",
            job.id,
            job.kind,
            job.attempts,
            job.max_attempts,
            "; it is dead" if dead else "",
            error,
            exc_info=exc if traced else None,
        )
        async with self.database.write_session() as session:
            await session.execute(
                text(
                    "UPDATE jobs SET state = :state, run_at = :run_at, last_error = :error, "
                    "lease_owner = NULL, lease_expires_at = NULL, updated_at = :now "
                    "WHERE id = :id AND lease_owner = :owner AND state = 'running'"
                ).bindparams(*_times("run_at", "now")),
                {
                    "state": "dead" if dead else "ready",
                    "run_at": now if dead else now + backoff(job.attempts, self._rng),
                    "error": error,
                    "now": now,
                    "id": job.id,
                    "owner": self.owner,
                },
            )
            await session.commit()

    async def _heartbeat(self) -> None:
        """Extend this worker's leases while its jobs run."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            if not self._running:
                continue
            with contextlib.suppress(Exception):  # a missed beat is retried; leases are long
                async with self.database.write_session() as session:
                    now = self.clock.now()
                    await session.execute(
                        text(
                            "UPDATE jobs SET lease_expires_at = :expires "
                            "WHERE lease_owner = :owner AND state = 'running'"
                        ).bindparams(*_times("expires")),
                        {"expires": now + self.lease, "owner": self.owner},
                    )
                    await session.commit()


def _times(*names: str) -> list[BindParameter[datetime]]:
    """Bind parameters for instants, stored as the `UTCDateTime` columns store them."""
    return [bindparam(name, type_=UTCDateTime()) for name in names]


def _asyncpg_dsn(database: Database) -> str:
    return database.url.replace("postgresql+asyncpg://", "postgresql://", 1)
