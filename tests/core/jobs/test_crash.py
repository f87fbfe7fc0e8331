"""A worker killed with SIGKILL mid-job: its job is taken over once the lease expires."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.queue import NewJob
from clarion.core.jobs.worker import DEFAULT_LEASE, JobContext, Registry, Worker
from tests.conftest import Tenant
from tests.core.jobs.conftest import add_jobs, jobs_of

ROOT = Path(__file__).resolve().parents[3]


async def test_a_killed_workers_job_is_taken_over(
    database: Database, tenant: Tenant, kind: str, tmp_path: Path
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    await add_jobs(database, clock, NewJob(tenant.id, kind, {"order": 1001}))
    marker = tmp_path / "holding"
    process = subprocess.Popen(  # noqa: ASYNC220 - a real process, started once
        [sys.executable, "-m", "tests.core.jobs.worker_process", database.url, kind, str(marker)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the worker process died on its own"
            assert time.monotonic() < deadline, "the worker process never took the job"
            await asyncio.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()

    [held] = await jobs_of(database, kind)
    assert held.state == "running" and held.lease_owner and str(process.pid) in held.lease_owner

    finished: list[JobContext] = []
    registry = Registry()

    async def handler(context: JobContext) -> None:
        finished.append(context)

    registry.add(kind, handler)
    survivor = Worker(database, registry, clock=clock)
    assert await survivor.drain() == 0  # the dead worker's lease has not expired yet
    clock.advance(DEFAULT_LEASE + timedelta(minutes=1))
    assert await survivor.drain() == 1
    assert [(c.job.payload, c.job.attempts) for c in finished] == [({"order": 1001}, 2)]
    assert await jobs_of(database, kind) == []


def test_clarion_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": f"sqlite:///{tmp_path / 'clarion.db'}",
        "CLARION_DATA_DIR": str(tmp_path),
        "CLARION_LOG_LEVEL": "info",  # the test waits for the worker's "running" line
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "clarion"), "worker"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()])
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while "running" not in lines.get(timeout=max(0.1, deadline - time.monotonic())):
            pass
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=10)
        assert any("stopped" in line for line in list(lines.queue))
    finally:
        process.kill()
        process.wait()
        reader.join(timeout=10)
        process.stderr.close()
