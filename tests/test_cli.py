"""The command line: migrate, workspaces and keys, against both databases."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from clarion.cli import app
from clarion.core import migrations
from clarion.core.database import Database
from clarion.core.settings import get_settings


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


def test_keys_create_list_revoke(clarion: CliRunner) -> None:
    assert f"revision {migrations.head_revision()}" in run(clarion, "migrate").output

    created = run(
        clarion, "keys", "create", "--scope", "write", "--source", "Backend", "--name", "server"
    )
    key_id = re.search(r"key ([0-9a-f-]{36})", created.output)
    secret = created.output.strip().splitlines()[-1]
    assert key_id and secret.startswith("clw_")

    listed = run(clarion, "keys", "list").output
    assert key_id.group(1) in listed
    assert secret not in listed
    assert "active" in listed

    run(clarion, "keys", "revoke", key_id.group(1))
    [line] = [
        row for row in run(clarion, "keys", "list").output.splitlines() if key_id.group(1) in row
    ]
    assert "revoked" in line


def test_keys_in_another_workspace(clarion: CliRunner) -> None:
    run(clarion, "workspaces", "create", "shop-eu", "--name", "Shop EU")
    assert "shop-eu" in run(clarion, "workspaces", "list").output
    created = run(clarion, "keys", "create", "--scope", "read-only", "-w", "shop-eu")
    key_id = re.search(r"key ([0-9a-f-]{36})", created.output)
    assert key_id

    assert key_id.group(1) in run(clarion, "keys", "list", "-w", "shop-eu").output
    assert key_id.group(1) not in run(clarion, "keys", "list").output
    # Revoking through the wrong workspace finds nothing.
    failed = run(clarion, "keys", "revoke", key_id.group(1), code=1)
    assert "No key" in failed.output


def test_bad_cli_input(clarion: CliRunner) -> None:
    assert "--source" in run(clarion, "keys", "create", "--scope", "write", code=2).output
    assert "No workspace" in run(clarion, "keys", "list", "-w", "nowhere", code=1).output
    run(clarion, "keys", "create", "--scope", "root", code=2)
    run(clarion, "keys", "revoke", "not-a-uuid", code=2)
    run(clarion, "workspaces", "create", "dup")
    assert "already exists" in run(clarion, "workspaces", "create", "dup", code=1).output
