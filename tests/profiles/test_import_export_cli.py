"""`clarion import profiles` and `clarion export profiles`, against both databases."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import run_cli


@pytest.fixture
def migrated(clarion: CliRunner) -> CliRunner:
    """Runs `clarion` commands on a fresh, migrated database of the backend."""
    run_cli(clarion, "migrate")
    return clarion


def exported_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def test_import_then_export(clarion: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "customers.csv"
    source.write_text(
        "user_id,email,name,age:int\n"
        "u1,ann@example.com,Ann,41\n"
        "u2,not-an-email,Bob,30\n"
        "u3,,Cy,old\n"
        ",cy@example.com,Cy,33\n",
        encoding="utf-8",
    )
    output = run_cli(clarion, "import", "profiles", str(source)).output
    assert "rows 4, created 2, updated 0, rejected 2" in output
    assert "line 3: email: not an email address" in output
    assert "line 4: age:int: not a whole number" in output

    target = tmp_path / "out.csv"
    assert run_cli(clarion, "export", "profiles", "-o", str(target)).output == ""
    rows = exported_rows(target.read_text(encoding="utf-8"))
    assert sorted((r["user_id"], r["email"], r["name"], r["age:int"]) for r in rows) == [
        ("", "cy@example.com", "Cy", "33"),
        ("u1", "ann@example.com", "Ann", "41"),
    ]
    lines = run_cli(clarion, "export", "profiles", "--format", "jsonl").output.splitlines()
    assert sorted(json.loads(line)["traits"]["name"] for line in lines) == ["Ann", "Cy"]

    # The export imports into another workspace (gzip files too) with the same traits.
    run_cli(clarion, "workspaces", "create", "copy")
    packed = tmp_path / "out.csv.gz"
    packed.write_bytes(gzip.compress(target.read_bytes()))
    again = run_cli(clarion, "import", "profiles", str(packed), "-w", "copy").output
    assert "rows 2, created 2, updated 0, rejected 0" in again
    copy = run_cli(clarion, "export", "profiles", "-f", "jsonl", "-w", "copy").output.splitlines()
    assert sorted(json.loads(line)["traits"]["name"] for line in copy) == ["Ann", "Cy"]
    # Importing the same file again updates the profiles it created.
    repeat = run_cli(clarion, "import", "profiles", str(target), "-w", "copy").output
    assert "rows 2, created 0, updated 2, rejected 0" in repeat


def test_bad_files_and_workspaces(clarion: CliRunner, tmp_path: Path) -> None:
    headless = tmp_path / "names.csv"
    headless.write_text("name\nAnn\n", encoding="utf-8")
    failed = run_cli(clarion, "import", "profiles", str(headless), code=1).output
    assert "user_id, email or phone" in failed
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty" in run_cli(clarion, "import", "profiles", str(empty), code=1).output
    run_cli(clarion, "import", "profiles", str(tmp_path / "missing.csv"), code=2)
    assert (
        "No workspace"
        in run_cli(clarion, "import", "profiles", str(empty), "-w", "nowhere", code=1).output
    )
    assert "No workspace" in run_cli(clarion, "export", "profiles", "-w", "nowhere", code=1).output
    run_cli(clarion, "export", "profiles", "--format", "xml", code=2)
    many = tmp_path / "many.csv"
    many.write_text("email\n" + "nope\n" * 120, encoding="utf-8")
    output = run_cli(clarion, "import", "profiles", str(many)).output
    assert "rejected 120" in output and "... and 20 more rejected rows" in output
