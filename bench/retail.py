"""Real-data benchmark: the whole UCI Online Retail data set through Clarion, then the
ready-made segments and RFM groups over it.

Per database (SQLite, PostgreSQL), on a fresh database:

1. `clarion import orders` loads all 541,909 order lines (about 26,500 identify, `Order
   Completed` and `Order Refunded` events) through the ingestion path;
2. one `clarion worker` processes them into profiles (and real-time segment membership of
   no segment yet);
3. in process, every ready-made segment is created and recomputed over the workspace as of
   the day after the data set ends (2011-12-10), after the RFM boundaries are computed.

Exactly one JSON line goes to stdout: seconds for each step, and per segment its members
and the recompute's seconds. Progress goes to stderr.

    .venv/bin/python bench/retail.py [--databases sqlite,postgresql] [--file PATH]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import (
    CLARION,
    BenchError,
    clarion_env,
    fresh_database,
    machine,
    migrate,
    run_async,
    stop,
)
from bench.pipeline import wait_processed
from clarion.core.database import Database
from clarion.segments import recompute, service
from clarion.segments.catalog import Catalog
from clarion.segments.templates import TEMPLATES
from clarion.workspaces import service as workspaces

log = logging.getLogger("bench.retail")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "online-retail"
NOW = datetime(2011, 12, 10, tzinfo=UTC)  # the day after the data set's last order


async def _segments(url: str) -> dict[str, dict[str, Any]]:
    """Create and recompute every ready-made segment; per template, members and seconds."""
    database = Database(url)
    results: dict[str, dict[str, Any]] = {}
    catalog = Catalog()
    try:
        for key in TEMPLATES:
            async with database.write_session() as session:
                workspace = await workspaces.get_workspace_by_slug_or_raise(
                    session, slug=workspaces.DEFAULT_WORKSPACE_SLUG
                )
                segment, _ = await service.create_from_template(
                    session, workspace_id=workspace.id, key=key, now=NOW
                )
                started = time.perf_counter()
                done = await recompute.recompute_one(
                    session, workspace_id=workspace.id, segment=segment, catalog=catalog, now=NOW
                )
                await session.commit()
                seconds = time.perf_counter() - started
            results[key] = {"members": done.size, "recompute_seconds": round(seconds, 2)}
            log.info("%s: %d members in %.2f s", key, done.size, seconds)
    finally:
        await database.dispose()
    return results


def measure(kind: str, data: Path, folder: Path) -> dict[str, Any]:
    """Import, process and segment the data set on a fresh database of `kind`."""
    with fresh_database(kind, folder) as url:
        migrate(url, folder)
        env = clarion_env(url, folder)
        started = time.perf_counter()
        loaded = subprocess.run(
            [str(CLARION), "import", "orders", str(data)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if loaded.returncode != 0:
            raise BenchError(f"clarion import orders failed:\n{loaded.stdout}{loaded.stderr}")
        import_seconds = time.perf_counter() - started
        log.info("%s: %s", kind, loaded.stdout.splitlines()[0])
        worker = subprocess.Popen(
            [str(CLARION), "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "worker.log").open("wb"),
        )
        try:
            processing_seconds, _ = wait_processed(url, [worker])
        finally:
            stop(worker)
        log.info("%s: processed in %.1f s", kind, processing_seconds)
        segments = run_async(_segments(url))
    return {
        "import": loaded.stdout.splitlines()[0],
        "import_seconds": round(import_seconds, 1),
        "processing_seconds": round(processing_seconds, 1),
        "segments": segments,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--file", type=Path, default=DATA / "online_retail.csv.gz")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if not options.file.exists():
        raise BenchError(f"{options.file} is missing: the data set lives in ../shared/data")
    figures: dict[str, Any] = {"bench": "retail", "machine": machine(), "file": options.file.name}
    with tempfile.TemporaryDirectory(prefix="clarion-retail-") as temporary:
        for kind in options.databases.split(","):
            figures[kind] = measure(kind, options.file, Path(temporary) / kind)
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
