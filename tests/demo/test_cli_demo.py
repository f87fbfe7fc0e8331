"""`clarion demo` on a fresh database of each backend."""

from __future__ import annotations

import re

from typer.testing import CliRunner, Result

from tests.conftest import run_cli

SMALL = ("--customers", "20", "--end", "2025-02-01")


def _stored(result: Result) -> int:
    found = re.search(r"([\d,]+) events stored", result.output)
    assert found, result.output
    return int(found.group(1).replace(",", ""))


def test_demo_loads_once_and_if_empty_skips(clarion: CliRunner) -> None:
    first = run_cli(clarion, "demo", "--seed", "5", *SMALL, "--if-empty")
    assert re.search(
        r"20 customers, 100 products, [\d,]+ events stored .* in [\d.]+ s", first.output
    )
    assert _stored(first) > 500
    assert "9 ready-made segments created" in first.output
    listed = run_cli(clarion, "segments", "list").output
    assert "New customers" in listed and "Champions (RFM)" in listed

    skipped = run_cli(clarion, "demo", "--seed", "5", *SMALL, "--if-empty")
    assert "skipped" in skipped.output and "already holds events" in skipped.output

    rerun = run_cli(clarion, "demo", "--seed", "5", *SMALL)
    assert _stored(rerun) == 0  # the same seed stores nothing twice
    assert "0 ready-made segments created" in rerun.output

    other = run_cli(clarion, "demo", "--seed", "6", *SMALL)
    assert _stored(other) > 500  # another seed is another shop


def test_demo_bad_input(clarion: CliRunner) -> None:
    run_cli(clarion, "demo", "--end", "2025-13-01", code=2)
    run_cli(clarion, "demo", "--customers", "0", code=2)
    assert "No workspace" in run_cli(clarion, "demo", *SMALL, "-w", "nowhere", code=1).output
