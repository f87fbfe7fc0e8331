"""`clarion demo` on a fresh database of each backend."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from clarion.cli import app
from clarion.core.database import Database
from clarion.core.settings import get_settings

SMALL = ("--customers", "20", "--end", "2025-02-01")


@pytest.fixture
def clarion(fresh_database: Database, tmp_path: Path) -> Iterator[CliRunner]:
    """Runs `clarion` commands on a fresh database of the backend."""
    get_settings.cache_clear()
    runner = CliRunner(
        env={"CLARION_DATABASE_URL": fresh_database.url, "CLARION_DATA_DIR": str(tmp_path)}
    )
    yield runner
    get_settings.cache_clear()


def run(runner: CliRunner, *args: str, code: int = 0) -> Result:
    get_settings.cache_clear()
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def _stored(result: Result) -> int:
    found = re.search(r"([\d,]+) events stored", result.output)
    assert found, result.output
    return int(found.group(1).replace(",", ""))


def test_demo_loads_once_and_if_empty_skips(clarion: CliRunner) -> None:
    first = run(clarion, "demo", "--seed", "5", *SMALL, "--if-empty")
    assert re.search(
        r"20 customers, 100 products, [\d,]+ events stored .* in [\d.]+ s", first.output
    )
    assert _stored(first) > 500

    skipped = run(clarion, "demo", "--seed", "5", *SMALL, "--if-empty")
    assert "skipped" in skipped.output and "already holds events" in skipped.output

    rerun = run(clarion, "demo", "--seed", "5", *SMALL)
    assert _stored(rerun) == 0  # the same seed stores nothing twice

    other = run(clarion, "demo", "--seed", "6", *SMALL)
    assert _stored(other) > 500  # another seed is another shop


def test_demo_bad_input(clarion: CliRunner) -> None:
    run(clarion, "demo", "--end", "2025-13-01", code=2)
    run(clarion, "demo", "--customers", "0", code=2)
    assert "No workspace" in run(clarion, "demo", *SMALL, "-w", "nowhere", code=1).output
