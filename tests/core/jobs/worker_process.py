"""A worker process for the crash test: runs `KIND` jobs that never finish.

Usage: python -m tests.core.jobs.worker_process DATABASE_URL KIND MARKER_FILE
The handler writes MARKER_FILE once it holds a job, then hangs until the process is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.jobs.worker import JobContext, Registry, Worker


async def main(url: str, kind: str, marker: Path) -> None:
    database = Database(url)
    registry = Registry()

    async def hang(context: JobContext) -> None:
        marker.write_text(str(context.job.id))
        await asyncio.Event().wait()

    registry.add(kind, hang)
    await Worker(database, registry, clock=SystemClock(), poll_interval=0.1).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
