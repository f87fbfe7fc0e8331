"""Replay a real-time round of the segments benchmark on a kept database, on a fresh copy
each time: for comparing two sources back to back on one host. The full benchmark's
figures vary by host by a third, and a round's database depends on the rounds before it;
here every run starts from the same bytes.

    .venv/bin/python bench/segments_rounds.py prepare NAME [--databases postgresql|sqlite]
        [--quick] [--seed S]
    .venv/bin/python bench/segments_rounds.py run NAME [--round first-touch|again]
        [--workers N] [--repeat K] [--source DIR]
    .venv/bin/python bench/segments_rounds.py drop NAME

`prepare` builds a database as `bench/segments.py` does (same seed, same data), applies the
no-segment round, defines the 50 segments with their baselines, stores the first-touch
backlog and keeps that as the template `first-touch`; then drains it, stores the "again"
backlog (the same customers) and keeps that as `again`. PostgreSQL templates are the
databases `NAME_first_touch` and `NAME_again`; SQLite's are files under
`/tmp/clarion-rounds/NAME/`, with the boundaries each round's figures start from.

`run` copies a template (PostgreSQL: `CREATE DATABASE ... TEMPLATE ... STRATEGY
FILE_COPY`, then `CHECKPOINT`), drains its backlog with `--workers` `clarion worker`
processes, and prints one JSON line per run (a run that fails prints its `error`, with the
traceback on stderr, and the next runs go on): events/s as the full benchmark counts them,
`Segment Entered` / `Exited` emitted, and the CPU seconds of the workers and of the
PostgreSQL server's processes (all of them: run nothing else on the server meanwhile).
`--source DIR` runs the workers on another checkout's `src/` (a `git worktree` of an older
commit, say) through `PYTHONPATH`; the schema must be the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import segments
from bench.ingest import (
    PG_URL,
    _pg_admin,
    fresh_database,
    migrate,
    run_async,
)

log = logging.getLogger("bench.segments_rounds")
ROUNDS = ("first-touch", "again")
SQLITE_FOLDER = Path(tempfile.gettempdir()) / "clarion-rounds"


def _template(name: str, round_name: str) -> str:
    return f"{name}_{round_name.replace('-', '_')}"


def _meta_path(name: str) -> Path:
    return SQLITE_FOLDER / name / "rounds.json"


def prepare(name: str, kind: str, quick: bool, seed: int) -> None:
    """Build the two templates of `name` (see the module's docstring)."""
    options = segments.parse_args(
        ["--databases", kind, "--seed", str(seed)] + (["--quick"] if quick else [])
    )
    profiles, events = options.size(kind)
    rng = random.Random(options.seed)
    # Drawn as the full benchmark draws them, so that the same backlogs follow.
    rng.sample(range(profiles), 2 * int(options.latency_seconds * segments.LATENCY_RATE))
    folder = SQLITE_FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"kind": kind, "profiles": profiles, "events": events}
    # The build database goes at the end (a PostgreSQL one stays under $BENCH_KEEP_DATABASE):
    # the templates are copies of it.
    with fresh_database(kind, folder / "build") as url:
        migrate(url, folder / "build")
        shape = segments.Shape(profiles, events, options.seed, datetime.now(UTC))
        segments.load(kind, url, shape)
        now = datetime.now(UTC)
        messages, _ = segments.live_messages(rng, range(profiles), options.backlog, now)
        segments.drain_round(kind, url, folder / "build", "no-segments", messages)
        ids: dict[str, int] = {}
        run_async(segments.define_ping(url, ids))
        run_async(segments.measure_batch(url, ids))
        run_async(segments.define_more(url, ids))
        messages, users = segments.live_messages(rng, range(profiles), options.backlog, now)
        meta["first-touch"] = run_async(segments.store_backlog(url, messages))
        _keep(url, kind, name, "first-touch")
        segments.drain_stored(kind, url, folder / "build", "first-touch", meta["first-touch"])
        messages, _ = segments.live_messages(rng, sorted(set(users)), options.backlog, now)
        meta["again"] = run_async(segments.store_backlog(url, messages))
        _keep(url, kind, name, "again")
    shutil.rmtree(folder / "build", ignore_errors=True)
    _meta_path(name).write_text(json.dumps(meta))
    log.info("prepared %s (%s): %s", name, kind, ", ".join(ROUNDS))


def _keep(url: str, kind: str, name: str, round_name: str) -> None:
    if kind == "postgresql":
        source = url.rsplit("/", 1)[1]
        target = _template(name, round_name)
        _drop_database(target)
        run_async(_pg_admin(f'CREATE DATABASE "{target}" TEMPLATE "{source}"'))
        return
    # No connection is open (every stage disposes of its own): the file is whole.
    shutil.copy(url.removeprefix("sqlite:///"), SQLITE_FOLDER / name / f"{round_name}.db")


def run(name: str, round_name: str, workers: int, repeat: int, source: str | None) -> None:
    """Drain copies of the template `repeat` times; a JSON line each."""
    meta = json.loads(_meta_path(name).read_text())
    kind = meta["kind"]
    if source is not None:
        os.environ["PYTHONPATH"] = str(Path(source).resolve() / "src")
    for number in range(repeat):
        with tempfile.TemporaryDirectory(prefix="clarion-round-") as tmp:
            folder = Path(tmp)
            url = _copy(kind, name, round_name, folder)
            try:
                figures = segments.drain_stored(
                    kind, url, folder, round_name, meta[round_name], workers
                )
            except Exception as exc:  # a failed run is a result too: said, and the next runs
                log.exception("run %d failed", number + 1)
                figures = {"error": f"{type(exc).__name__}: {exc}"[-4000:]}
            finally:
                if kind == "postgresql":
                    _drop_database(_copy_name(name))
        line = {"round": round_name, "run": number + 1, "workers": workers, "source": source}
        print(json.dumps(line | figures), flush=True)


def _drop_database(name: str) -> None:
    run_async(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _copy_name(name: str) -> str:
    return f"{name}_run"


def _copy(kind: str, name: str, round_name: str, folder: Path) -> str:
    if kind == "postgresql":
        copy = _copy_name(name)
        _drop_database(copy)
        template = _template(name, round_name)
        run_async(_pg_admin(f'CREATE DATABASE "{copy}" TEMPLATE "{template}" STRATEGY FILE_COPY'))
        run_async(_pg_admin("CHECKPOINT"))  # the copy's writes are not the round's
        return PG_URL.format(name=copy)
    shutil.copy(SQLITE_FOLDER / name / f"{round_name}.db", folder / "clarion.db")
    return f"sqlite:///{folder / 'clarion.db'}"


def drop(name: str) -> None:
    """Remove the templates of `name`."""
    meta = json.loads(_meta_path(name).read_text())
    if meta["kind"] == "postgresql":
        for round_name in ROUNDS:
            _drop_database(_template(name, round_name))
    shutil.rmtree(SQLITE_FOLDER / name, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    preparing = commands.add_parser("prepare", help="build the templates")
    preparing.add_argument("name")
    preparing.add_argument("--databases", choices=("postgresql", "sqlite"), default="postgresql")
    preparing.add_argument("--quick", action="store_true", help="the benchmark's --quick size")
    preparing.add_argument("--seed", type=int, default=20261122)
    running = commands.add_parser("run", help="drain copies of a template")
    running.add_argument("name")
    running.add_argument("--round", choices=ROUNDS, default="first-touch")
    running.add_argument("--workers", type=int, default=1)
    running.add_argument("--repeat", type=int, default=3)
    running.add_argument("--source", help="a checkout whose src/ the workers run")
    dropping = commands.add_parser("drop", help="remove the templates")
    dropping.add_argument("name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command == "prepare":
        prepare(args.name, args.databases, args.quick, args.seed)
    elif args.command == "run":
        run(args.name, args.round, args.workers, args.repeat, args.source)
    else:
        drop(args.name)


if __name__ == "__main__":
    main()
