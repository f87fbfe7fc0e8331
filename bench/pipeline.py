"""Pipeline benchmark: how fast accepted events become profiles.

Two measurements per database (SQLite, PostgreSQL):

1. **Throughput.** The demo shop (`clarion demo`: about 145,000 events of 2,000 customers,
   with anonymous browsing, sign-ups linking devices to users, carts and orders) is loaded
   through the ingestion path with no worker running, so its processing jobs wait. Then 1 or
   2 `clarion worker` processes start and process them: identity resolution, traits, computed
   traits and timelines. The figure is events applied per second between the first and the
   last batch a worker applied (the first batch's events, processed before that window
   opens, not counted). Targets: >= 5,000 events/s per worker; on PostgreSQL two
   workers >= 1.5x one.
2. **Latency.** `clarion serve` (API and an in-process worker) receives 1,000 events/s for
   `--seconds` (batches of 100 every 100 ms); for every event, the time from its arrival
   (`received_at`) to its profile update (`profile_events.applied_at`). Target: p99 < 1 s.

Exactly one JSON line goes to stdout; progress goes to stderr.

    .venv/bin/python bench/pipeline.py [--customers N] [--seconds S] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import (
    CLARION,
    BenchError,
    MessageFactory,
    build_bodies,
    clarion_env,
    fresh_database,
    machine,
    migrate,
    percentile,
    postgres_cpu_seconds,
    postgres_settings,
    run_async,
    running_server,
    send_paced,
    stop,
    tree_cpu_seconds,
)
from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from clarion.profiles.models import ProfileEvent

log = logging.getLogger("bench.pipeline")

TARGET_PER_WORKER = 5_000
TARGET_SCALING = 1.5
TARGET_P99_S = 1.0
LATENCY_RATE = 1_000  # events per second
LATENCY_BATCH = 100
DRAIN_TIMEOUT_S = 900.0
DRAIN_POLL_S = 0.05  # a drain's end is seen this late at most


@dataclass(frozen=True)
class Options:
    customers: int
    seconds: float
    databases: list[str]
    workers: list[int]
    concurrency: int | None  # jobs each worker runs at once; None: the default setting


async def _pending_jobs(database: Database) -> int:
    async with database.read_session() as session:
        count = await session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == PROCESS_EVENTS)
        )
        return int(count or 0)


def wait_processed(
    url: str, processes: Sequence[subprocess.Popen[bytes]]
) -> tuple[float, datetime]:
    """Poll until no processing job is left; the seconds it took, and when it was seen."""
    started = time.monotonic()

    async def poll() -> datetime:
        database = Database(url)
        try:
            while await _pending_jobs(database):
                if any(p.poll() is not None for p in processes):
                    raise BenchError("a worker exited while jobs were pending")
                if time.monotonic() - started > DRAIN_TIMEOUT_S:
                    raise BenchError(f"jobs still pending after {DRAIN_TIMEOUT_S:.0f} s")
                await asyncio.sleep(DRAIN_POLL_S)
            return datetime.now(UTC)
        finally:
            await database.dispose()

    drained_at = run_async(poll())
    return time.monotonic() - started, drained_at


async def _applied(url: str) -> tuple[int, int, int, float, list[float], datetime | None]:
    """Events stored, events applied, those applied after the first batch, seconds between
    the first and the last run's start, latencies, the first run's start."""
    database = Database(url)
    try:
        async with database.read_session() as session:
            stored = int(await session.scalar(select(func.count()).select_from(Event)) or 0)
            rows = (
                await session.execute(
                    select(Event.received_at, func.min(ProfileEvent.applied_at))
                    .join(ProfileEvent, ProfileEvent.event_id == Event.id)
                    .group_by(Event.id, Event.received_at)
                )
            ).all()
    finally:
        await database.dispose()
    applied = [_utc(at) for _, at in rows]
    first = min(applied, default=None)
    window = (max(applied) - first).total_seconds() if first else 0.0
    # A batch stamps all its events with one time, taken after they were read: the first
    # batch's events were processed before the window opens, so they do not count in it.
    after_first = sum(1 for at in applied if first and at > first)
    latencies = [(_utc(at) - _utc(received)).total_seconds() for received, at in rows]
    return stored, len(rows), after_first, window, latencies, first


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite's func.min() hands back the stored text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def measure_throughput(kind: str, workers: int, options: Options, folder: Path) -> dict[str, Any]:
    """Load the demo shop with no worker running, then process it with `workers` workers."""
    with fresh_database(kind, folder) as url:
        migrate(url, folder)
        loaded = subprocess.run(
            [
                str(CLARION),
                "demo",
                "--seed",
                "7",
                "--end",
                "2026-11-01",
                "--customers",
                str(options.customers),
            ],
            env=clarion_env(url, folder),
            capture_output=True,
            text=True,
            check=False,
        )
        if loaded.returncode != 0:
            raise BenchError(f"clarion demo failed:\n{loaded.stdout}{loaded.stderr}")
        log.info("%s: demo loaded: %s", kind, loaded.stdout.strip())
        postgres_before = postgres_cpu_seconds()
        processes = [
            subprocess.Popen(
                [str(CLARION), "worker"]
                + (
                    []
                    if options.concurrency is None
                    else ["--concurrency", str(options.concurrency)]
                ),
                env=clarion_env(url, folder),
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"worker-{n}.log").open("wb"),
            )
            for n in range(workers)
        ]
        try:
            seconds, drained_at = wait_processed(url, processes)
            worker_cpu = sum(tree_cpu_seconds(process.pid) for process in processes)
            postgres_after = postgres_cpu_seconds()
        finally:
            for process in processes:
                stop(process)
        postgres_cpu = sum(
            seconds_used - postgres_before.get(pid, 0.0)
            for pid, seconds_used in postgres_after.items()
        )
        stored, applied, after_first, starts, _, first = run_async(_applied(url))
    # From the first run's start (its `applied_at`) to the drain, every event counted: the
    # last run's work is in the time too (the window of sessions before 29, kept as
    # `events_per_s_start_to_start`, ended at its start).
    window = (drained_at - first).total_seconds() if first else 0.0
    rate = applied / window if window > 0 else 0.0
    log.info("%s, %d worker(s): %d events applied in %.1f s", kind, workers, applied, window)
    return {
        "workers": workers,
        "events_stored": stored,
        "events_applied": applied,
        "seconds_to_drain": round(seconds, 2),
        "processing_seconds": round(window, 2),
        "events_per_s": round(rate, 1),
        "events_per_s_per_worker": round(rate / workers, 1),
        "events_per_s_start_to_start": round(after_first / starts, 1) if starts else 0.0,
        # Start-up included; PostgreSQL's figure is zero on SQLite.
        "cpu_seconds": {"workers": round(worker_cpu, 2), "postgres": round(postgres_cpu, 2)},
    }


def measure_latency(kind: str, options: Options, folder: Path) -> dict[str, Any]:
    """Ingest at LATENCY_RATE events/s into a server with its worker; arrival-to-profile."""
    batches = int(options.seconds * LATENCY_RATE / LATENCY_BATCH)
    factory = MessageFactory(seed=11, now=datetime.now(UTC))
    bodies = build_bodies(factory, batches * LATENCY_BATCH)
    with fresh_database(kind, folder) as url, running_server(url, folder, worker=True) as server:
        run_async(send_paced(server.port, bodies, LATENCY_BATCH / LATENCY_RATE))
        wait_processed(url, [server.process])
        stored, applied, _, _, latencies, _ = run_async(_applied(url))
    return {
        "events_per_s_sent": LATENCY_RATE,
        "events_stored": stored,
        "events_applied": applied,
        "latency_s_p50": round(percentile(latencies, 50), 3),
        "latency_s_p99": round(percentile(latencies, 99), 3),
        "latency_s_max": round(max(latencies), 3),
    }


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=2_000, help="demo shop size")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2", help="worker counts for throughput")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="jobs each worker runs at once (default 4)"
    )
    parser.add_argument("--quick", action="store_true", help="200 customers, 5 s of latency")
    args = parser.parse_args(argv)
    return Options(
        customers=200 if args.quick else args.customers,
        seconds=5.0 if args.quick else args.seconds,
        databases=args.databases.split(","),
        workers=[int(n) for n in args.workers.split(",")],
        concurrency=args.concurrency,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    options = parse_args(argv)
    result: dict[str, Any] = {"bench": "pipeline", "machine": machine()}
    if "postgresql" in options.databases:
        result["postgres_settings"] = run_async(postgres_settings())
    for kind in options.databases:
        with tempfile.TemporaryDirectory(prefix=f"clarion-pipeline-{kind}-") as tmp:
            runs = [
                measure_throughput(kind, n, options, Path(tmp) / f"throughput-{n}")
                for n in options.workers
            ]
            latency = measure_latency(kind, options, Path(tmp) / "latency")
        # The per-worker target is one `clarion worker` process's; what a second one adds is
        # the scaling target's business (PostgreSQL only: SQLite has one writer).
        one_worker = [run["events_per_s"] for run in runs if run["workers"] == 1]
        entry: dict[str, Any] = {"throughput": runs, "latency": latency}
        if len(runs) > 1 and runs[0]["workers"] == 1:
            entry["scaling_2_over_1"] = round(runs[1]["events_per_s"] / runs[0]["events_per_s"], 2)
        entry["target_met"] = (
            bool(one_worker)
            and one_worker[0] >= TARGET_PER_WORKER
            and latency["latency_s_p99"] < TARGET_P99_S
            and (kind != "postgresql" or entry.get("scaling_2_over_1", 0) >= TARGET_SCALING)
        )
        result[kind] = entry
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
