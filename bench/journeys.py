"""Journeys benchmark: 100,000 profiles through a five-node journey on PostgreSQL.

The journey: trigger (`Signed Up`), wait a day, condition (`tier` is gold, a third of the
profiles), send an email, exit. Sending ends at the messaging outbox: the message is
written, with its delivery job, and no worker delivers it (bench/messaging.py measures
delivery), which is what a log-only channel would show of the journey engine.

In one run, on a fresh PostgreSQL database:

1. **Entering.** N profiles are COPY-loaded (bench/messaging.py's), two journeys are
   published (the same graph, waiting one day and two days), and N `Signed Up` events are
   stored through the ingestion path. Two workers (every job kind but delivery) process
   them: each event enters both journeys, and steps move each run to its wait.
2. **Stepping, one worker.** A worker whose clock runs a day (and two minutes) ahead, for
   `journeys.step` jobs only, wakes the first journey's N runs and moves them through the
   condition, the send and the exit. Transitions/s between its first and last move; every
   run completed, every gold profile's message queued exactly once, no job dead.
3. **Stepping, two workers.** The same for the second journey, two days ahead, with two
   worker processes.
4. **Latency.** A third journey sends at once on `Checkout Started`; `clarion serve`
   takes LATENCY_RATE events/s (batches of LATENCY_BATCH, one profile each) for
   LATENCY_SECONDS while one worker (every kind but delivery, the real clock) processes
   them: from each event's arrival to its message's creation, p50 and p99.

Targets: >= 3,000 transitions/s per worker, two workers >= 1.5 times one, p99 event to
action under 1 s. Peak RSS of every worker. Exactly one JSON line goes to stdout; progress
goes to stderr. `bench/journeys.py worker` is the worker the rounds start.

    .venv/bin/python bench/journeys.py [--quick] [--profiles N] [--latency-seconds S]
        [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import orjson
import psutil  # type: ignore[import-untyped, unused-ignore]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import (
    MIB,
    BenchError,
    RssSampler,
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
    tree_cpu_seconds,
)
from bench.messaging import (
    WORKSPACE_ID,
    load_profiles,
    py_spy,
    recipients,
    source_version,
    stop_worker,
)
from bench.segments import store_backlog
from clarion.core.database import Database
from clarion.core.jobs.worker import Worker
from clarion.core.settings import get_settings
from clarion.journeys import service as journeys
from clarion.journeys.steps import STEP
from clarion.messaging import templates
from clarion.messaging.delivery import DELIVER
from clarion.pipeline import Pipeline

log = logging.getLogger("bench.journeys")

TARGET_PER_WORKER = 3_000.0  # transitions/s
TARGET_SCALING = 1.5
TARGET_P99_S = 1.0
DAY = 86_400
AHEAD_MARGIN_S = 120
SIGNED_UP = "Signed Up"
CHECKOUT = "Checkout Started"
LATENCY_RATE = 200  # events/s
LATENCY_BATCH = 10
POLL_S = 0.5
STEP_POLL_S = 0.05
ROUND_TIMEOUT_S = 1_800.0
THIS = Path(__file__).resolve()


# --- The worker the rounds start ---------------------------------------------------------------


class AheadClock:
    """The wall clock, `seconds` ahead: the journey's waits are over for this worker."""

    def __init__(self, seconds: float) -> None:
        self.delta = timedelta(seconds=seconds)

    def now(self) -> datetime:
        """The current instant in UTC, ahead."""
        return datetime.now(UTC) + self.delta


def serve_worker(ahead_s: float, kinds: Sequence[str] | None) -> None:
    """Run a worker (settings from the environment, as `clarion worker`) for `kinds`, or
    every kind but delivery, on a clock `ahead_s` ahead, until SIGTERM."""
    settings = get_settings()

    async def work() -> None:
        database = Database(settings.database_url, pool_size=settings.database_pool_size)
        clock = AheadClock(ahead_s)
        pipeline = Pipeline(database, settings, clock)
        registry = pipeline.registry().select(kinds or (), () if kinds else (DELIVER,))
        worker = Worker(database, registry, clock=clock, concurrency=settings.worker_concurrency)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.run()
        finally:
            await pipeline.close()
            await database.dispose()

    import uvloop  # the CLI's loop, as `clarion worker` runs

    uvloop.run(work())


def start_workers(
    count: int, url: str, folder: Path, label: str, ahead_s: float, kinds: Sequence[str] = ()
) -> list[subprocess.Popen[bytes]]:
    """`count` bench workers, their stderr in `<folder>/worker-<label>-<n>.log`; under
    py-spy with `$BENCH_WORKER_PROFILE` (as in bench/messaging.py)."""
    processes = []
    spy = py_spy()
    for number in range(count):
        command = [sys.executable, str(THIS), "worker", "--ahead-seconds", str(ahead_s)]
        if kinds:
            command += ["--kinds", ",".join(kinds)]
        if spy is not None:
            output = Path(os.environ["BENCH_WORKER_PROFILE"]) / f"{label}-{number}.txt"
            command = [spy, "record", "--format", "raw", "-o", str(output), "--", *command]
        with (folder / f"worker-{label}-{number}.log").open("wb") as errors:
            processes.append(
                subprocess.Popen(
                    command, env=clarion_env(url, folder), stdout=subprocess.DEVNULL, stderr=errors
                )
            )
    return processes


# --- Setting up ----------------------------------------------------------------------------------


def journey_graph(template_id: int, *, event: str, wait_s: int | None) -> dict[str, Any]:
    """Trigger on `event`, wait `wait_s` (none: no wait), send to gold-tier profiles, exit."""
    nodes: list[dict[str, Any]] = [
        {
            "id": "start",
            "type": "trigger",
            "trigger": {"kind": "event", "event": event},
            "next": "wait" if wait_s else "gold",
        },
        {
            "id": "gold",
            "type": "condition",
            "branches": [{"when": [["tier eq gold"]], "next": "mail"}],
            "otherwise": "done",
        },
        {
            "id": "mail",
            "type": "action",
            "actions": [{"kind": "send", "template_id": template_id}],
            "next": "done",
        },
        {"id": "done", "type": "exit"},
    ]
    if wait_s:
        nodes.insert(
            1,
            {
                "id": "wait",
                "type": "wait",
                "wait": {"kind": "duration", "seconds": wait_s},
                "next": "gold",
            },
        )
    return {"entry": {"frequency": "every_time"}, "nodes": nodes}


@dataclass(frozen=True, slots=True)
class Journeys:
    one_worker: int
    two_workers: int
    latency: int


async def set_up(url: str) -> Journeys:
    """The email template and the three journeys, published."""
    database = Database(url)
    now = datetime.now(UTC)
    try:
        async with database.write_session() as session:
            template, _ = await templates.create_template(
                session, workspace_id=WORKSPACE_ID, name="Welcome", channel="email",
                category="marketing", topic_id=None, now=now,
                content={"subject": "Welcome, {{ profile.traits.first_name | default('you') }}",
                         "html": "<p>Good to see you.</p>"},
            )  # fmt: skip
            ids = []
            for name, event, wait_s in (
                ("A day later", SIGNED_UP, DAY),
                ("Two days later", SIGNED_UP, 2 * DAY),
                ("At once", CHECKOUT, None),
            ):
                graph = journey_graph(template.id, event=event, wait_s=wait_s)
                journey = await journeys.create_journey(
                    session, workspace_id=WORKSPACE_ID, name=name, description="bench",
                    graph=graph, now=now,
                )  # fmt: skip
                await journeys.publish_journey(
                    session, workspace_id=WORKSPACE_ID, journey_id=journey.id, now=now
                )
                ids.append(journey.id)
            await session.commit()
    finally:
        await database.dispose()
    return Journeys(*ids)


def sign_ups(users: Sequence[str], seed: int) -> list[bytes]:
    """One `Signed Up` track message per user (for `store_backlog`)."""
    rng = random.Random(seed)
    return [
        orjson.dumps(
            {
                "type": "track",
                "event": SIGNED_UP,
                "userId": user,
                "messageId": f"signup-{rng.getrandbits(64):016x}",
                "properties": {"plan": rng.choice(("free", "plus", "pro"))},
            }
        )
        for user in users
    ]


# --- Watching the database ------------------------------------------------------------------------

_PENDING = """
SELECT count(*) FILTER (WHERE kind = 'events.process'),
       count(*) FILTER (WHERE kind = $1 AND run_at <= now() + make_interval(secs => $2)),
       count(*) FILTER (WHERE state = 'dead')
FROM jobs
"""
_RUNS = """
SELECT count(*) FILTER (WHERE state IN ('active', 'waiting')),
       count(*) FILTER (WHERE state = 'waiting' AND node = 'wait'),
       count(*) FILTER (WHERE state = 'completed'),
       count(*)
FROM journey_runs WHERE journey_id = $1
"""
_MOVES = """
SELECT count(*), min(at), max(at) FROM journey_transitions
WHERE journey_id = $1 AND at >= $2
"""
_SENT = """
SELECT count(*), count(DISTINCT idempotency_key), count(DISTINCT profile_id)
FROM messages WHERE workspace_id = $1 AND origin = 'journey' AND origin_id = $2
"""


async def wait_until(
    url: str,
    done: Any,
    processes: Sequence[subprocess.Popen[bytes]],
    folder: Path,
    what: str,
) -> float:
    """Poll `done(connection)` until true; the seconds it took. Fails when a worker exits or
    after ROUND_TIMEOUT_S."""
    started = time.monotonic()
    connection = await asyncpg.connect(url)
    try:
        while not await done(connection):
            for process in processes:
                if process.poll() is not None:
                    raise BenchError(f"a worker exited during {what}:\n{worker_logs(folder)}")
            if time.monotonic() - started > ROUND_TIMEOUT_S:
                raise BenchError(f"{what}: not done after {ROUND_TIMEOUT_S:.0f} s")
            await asyncio.sleep(POLL_S)
    finally:
        await connection.close()
    return time.monotonic() - started


_READY_STEPS = "SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'ready'"
_LIVE_RUNS = (
    "SELECT count(*) FROM journey_runs WHERE journey_id = $1 AND state IN ('active', 'waiting')"
)


async def step_window(
    url: str, journey_id: int, processes: Sequence[subprocess.Popen[bytes]], folder: Path, what: str
) -> tuple[float, float]:
    """When (monotonic) the workers first took a step job (fewer ready than at the start)
    and when the journey's last run was done, polled every STEP_POLL_S."""
    connection = await asyncpg.connect(url)
    try:
        ready = await connection.fetchval(_READY_STEPS, STEP)
        started = None
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while True:
            now = time.monotonic()
            if started is None and await connection.fetchval(_READY_STEPS, STEP) < ready:
                started = now
            if started is not None and not await connection.fetchval(_LIVE_RUNS, journey_id):
                return started, now
            if any(process.poll() is not None for process in processes):
                raise BenchError(f"a worker exited during {what}:\n{worker_logs(folder)}")
            if now > deadline:
                raise BenchError(f"{what}: not done after {ROUND_TIMEOUT_S:.0f} s")
            await asyncio.sleep(STEP_POLL_S)
    finally:
        await connection.close()


def worker_logs(folder: Path) -> str:
    """The ends of the workers' logs."""
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in folder.glob("worker-*.log"))


async def query(url: str, sql: str, *args: Any) -> tuple[Any, ...]:
    connection = await asyncpg.connect(url)
    try:
        return tuple(await connection.fetchrow(sql, *args))
    finally:
        await connection.close()


@contextlib.contextmanager
def watched(processes: Sequence[subprocess.Popen[bytes]]) -> Iterator[list[RssSampler]]:
    """RSS samplers on the processes, and the processes stopped afterwards."""
    samplers = [RssSampler(process.pid) for process in processes]
    try:
        for sampler in samplers:
            sampler.__enter__()
        yield samplers
    finally:
        for sampler in samplers:
            sampler.__exit__()
        for process in processes:
            stop_worker(process)


# --- The rounds ----------------------------------------------------------------------------------


def enter_round(url: str, folder: Path, ids: Journeys, profiles: int, seed: int) -> dict[str, Any]:
    """Store the sign-ups, then two workers process them: every profile enters both
    journeys and waits."""
    users = [who.user_id for who in recipients(profiles, seed)]
    boundary = run_async(store_backlog(url, sign_ups(users, seed)))
    log.info("entering: %d sign-ups stored after event %d; two workers start", profiles, boundary)
    workers = start_workers(2, url, folder, "enter", 0)

    async def done(connection: asyncpg.Connection) -> bool:
        process, due, _ = await connection.fetchrow(_PENDING, STEP, 0)
        waiting = [
            (await connection.fetchrow(_RUNS, j))[1] for j in (ids.one_worker, ids.two_workers)
        ]
        return process == 0 and due == 0 and waiting == [profiles, profiles]

    with watched(workers) as samplers:
        seconds = run_async(wait_until(url, done, workers, folder, "entering"))
    figures = {
        "sign_ups": profiles,
        "runs_entered": 2 * profiles,
        "seconds": round(seconds, 1),
        "sign_ups_per_s": round(profiles / seconds, 1),
        "peak_worker_rss_mib": [round(s.peak_bytes / MIB, 1) for s in samplers],
    }
    log.info("entering: %s", figures)
    return figures


def step_round(
    url: str, folder: Path, journey_id: int, workers: int, ahead_s: float, profiles: int
) -> dict[str, Any]:
    """`workers` step-only workers, `ahead_s` ahead, move the journey's waiting runs to
    their end."""
    since = datetime.now(UTC) + timedelta(seconds=ahead_s)
    postgres_before = postgres_cpu_seconds()
    processes = start_workers(workers, url, folder, f"step-{workers}", ahead_s, [STEP])

    with watched(processes) as samplers:
        started, finished = run_async(
            step_window(url, journey_id, processes, folder, f"{workers} worker(s)")
        )
        cpu = [tree_cpu_seconds(p.pid) for p in processes]
        postgres_after = postgres_cpu_seconds()  # while the workers' backends live
    moves, _, _ = run_async(query(url, _MOVES, journey_id, since))
    _, _, completed, total = run_async(query(url, _RUNS, journey_id))
    messages, keys, recipients_ = run_async(query(url, _SENT, WORKSPACE_ID, str(journey_id)))
    dead = run_async(query(url, _PENDING, STEP, 0))[2]
    span = finished - started
    figures = {
        "workers": workers,
        "runs": total,
        "completed": completed,
        "transitions": moves,
        "seconds_first_claim_to_last_run_done": round(span, 2),
        "transitions_per_s": round(moves / span, 1) if span else None,
        "transitions_per_s_per_worker": round(moves / span / workers, 1) if span else None,
        "runs_per_s": round(total / span, 1) if span else None,
        "messages": messages,
        "messages_exactly_once": messages == keys == recipients_,
        "dead_jobs": dead,
        "worker_cpu_s": [round(c, 1) for c in cpu],
        "postgres_cpu_s": round(_postgres_since(postgres_before, postgres_after), 1),
        "peak_worker_rss_mib": [round(s.peak_bytes / MIB, 1) for s in samplers],
    }
    if completed != profiles:
        raise BenchError(f"{completed} of {profiles} runs completed: {figures}")
    log.info("stepping with %d worker(s): %s", workers, figures)
    return figures


def _postgres_since(before: dict[int, float], after: dict[int, float] | None = None) -> float:
    """CPU seconds PostgreSQL's processes spent since `before` (until `after`, else now)."""
    after = postgres_cpu_seconds() if after is None else after
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def checkout_bodies(users: Sequence[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        orjson.dumps(
            {
                "batch": [
                    {
                        "type": "track",
                        "event": CHECKOUT,
                        "userId": user,
                        "messageId": f"checkout-{rng.getrandbits(64):016x}",
                        "properties": {"cart_id": f"cart-{start + n}"},
                    }
                    for n, user in enumerate(users[start : start + LATENCY_BATCH])
                ]
            }
        )
        for start in range(0, len(users), LATENCY_BATCH)
    ]


_LATENCIES = """
SELECT extract(epoch FROM m.created_at - e.received_at)::float8
FROM events e
JOIN profile_identities i ON i.kind = 'user_id' AND i.value = e.user_id
JOIN messages m ON m.profile_id = i.profile_id AND m.origin = 'journey' AND m.origin_id = $1
WHERE e.name = $2
ORDER BY e.id
"""


def latency_round(
    url: str, folder: Path, journey_id: int, profiles: int, seconds: float, seed: int
) -> dict[str, Any]:
    """LATENCY_RATE checkouts/s to `clarion serve`, one worker: event arrival to message."""
    gold = [who.user_id for who in recipients(profiles, seed) if who.traits["tier"] == "gold"]
    users = gold[: int(LATENCY_RATE * seconds)]
    bodies = checkout_bodies(users, seed)
    # The rounds before left 200,000 updated runs and 660,000 transitions: autovacuum would
    # take a core from the round (as it would once in a while on a live system).
    vacuumed = run_async(vacuum(url))
    with running_server(url, folder, worker=False) as server:
        workers = start_workers(1, url, folder, "latency", 0)
        with watched(workers) as samplers:
            time.sleep(3)  # the worker connects and listens before the first event
            cpu_before = tree_cpu_seconds(workers[0].pid), tree_cpu_seconds(server.process.pid)
            postgres_before = postgres_cpu_seconds()
            sending = run_async(send_paced(server.port, bodies, LATENCY_BATCH / LATENCY_RATE))

            async def done(connection: asyncpg.Connection) -> bool:
                process, due, _ = await connection.fetchrow(_PENDING, STEP, 0)
                return bool(process == 0 and due == 0)

            drained = run_async(wait_until(url, done, workers, folder, "latency"))
            cpu = [
                tree_cpu_seconds(workers[0].pid) - cpu_before[0],
                tree_cpu_seconds(server.process.pid) - cpu_before[1],
                _postgres_since(postgres_before),
            ]
    rows = run_async(_fetch(url, _LATENCIES, str(journey_id), CHECKOUT))
    latencies = [float(row[0]) for row in rows]  # in the order the events arrived
    third = len(latencies) // 3
    if len(latencies) != len(users):
        raise BenchError(f"{len(latencies)} messages for {len(users)} checkouts")
    figures = {
        "seconds_vacuum_before": round(vacuumed, 1),
        "events_per_s_sent": LATENCY_RATE,
        "events": len(users),
        "seconds_sending": round(sending, 1),
        "seconds_to_drain_after_sending": round(drained, 1),
        "latency_s_p50": round(percentile(latencies, 50), 3),
        "latency_s_p99": round(percentile(latencies, 99), 3),
        "latency_s_max": round(max(latencies), 3),
        # Rising from the first third to the last: the worker fell behind.
        "latency_s_p50_by_third": [
            round(percentile(latencies[n * third : (n + 1) * third], 50), 3) for n in range(3)
        ],
        "cpu_s_worker_server_postgres": [round(c, 1) for c in cpu],
        "peak_worker_rss_mib": [round(s.peak_bytes / MIB, 1) for s in samplers],
    }
    log.info("latency: %s", figures)
    return figures


async def vacuum(url: str) -> float:
    """VACUUM ANALYZE the tables the rounds wrote; the seconds it took."""
    started = time.monotonic()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "VACUUM (ANALYZE) journey_runs, journey_transitions, messages, jobs, events"
        )
    finally:
        await connection.close()
    return time.monotonic() - started


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


# --- Putting it together ----------------------------------------------------------------------


def targets(report: dict[str, Any]) -> dict[str, Any]:
    one = report["one_worker"]["transitions_per_s"] or 0.0
    two = report["two_workers"]["transitions_per_s"] or 0.0
    p99 = report["latency"]["latency_s_p99"]
    return {
        "transitions_per_s_per_worker": TARGET_PER_WORKER,
        "transitions_per_s_per_worker_met": one >= TARGET_PER_WORKER,
        "two_workers_over_one": round(two / one, 2) if one else None,
        "two_workers_over_one_met": bool(one) and two / one >= TARGET_SCALING,
        "latency_s_p99": TARGET_P99_S,
        "latency_s_p99_met": p99 < TARGET_P99_S,
    }


def measure(options: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="clarion-journeys-") as tmp:
        folder = Path(tmp)
        with fresh_database("postgresql", folder) as url:
            migrate(url, folder)
            loaded = run_async(load_profiles(url, options.profiles, options.seed))
            report["load_s"] = round(loaded, 1)
            ids = run_async(set_up(url))
            report["entering"] = enter_round(url, folder, ids, options.profiles, options.seed)
            report["one_worker"] = step_round(
                url, folder, ids.one_worker, 1, DAY + AHEAD_MARGIN_S, options.profiles
            )
            report["two_workers"] = step_round(
                url, folder, ids.two_workers, 2, 2 * DAY + AHEAD_MARGIN_S, options.profiles
            )
            report["latency"] = latency_round(
                url, folder, ids.latency, options.profiles, options.latency_seconds, options.seed
            )
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    worker = commands.add_parser("worker", help="a worker for the rounds (internal)")
    worker.add_argument("--ahead-seconds", type=float, default=0.0)
    worker.add_argument("--kinds", default="")
    parser.add_argument("--quick", action="store_true", help="10,000 profiles, 10 s latency")
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args(argv)
    if options.command is None and options.quick:
        options.profiles, options.latency_seconds = 10_000, 10.0
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print one JSON line on stdout."""
    options = parse_args(argv)
    if options.command == "worker":
        serve_worker(options.ahead_seconds, [k for k in options.kinds.split(",") if k])
        return 0
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.monotonic()
    report: dict[str, Any] = {
        "bench": "journeys",
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in psutil.getloadavg()],
        "profiles": options.profiles,
        "seed": options.seed,
        "source": source_version(),
        "postgres_settings": run_async(postgres_settings()),
    }
    try:
        report |= measure(options)
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    report["targets"] = targets(report)
    report["load_average_after"] = [round(x, 2) for x in psutil.getloadavg()]
    report["bench_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
