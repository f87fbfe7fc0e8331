"""The command line: migrate, workspaces and keys, against both databases."""

from __future__ import annotations

import re
import subprocess
import sys

from typer.testing import CliRunner

from clarion.core import migrations
from tests.conftest import run_cli


def test_keys_create_list_revoke(clarion: CliRunner) -> None:
    assert f"revision {migrations.head_revision()}" in run_cli(clarion, "migrate").output

    created = run_cli(
        clarion, "keys", "create", "--scope", "write", "--source", "Backend", "--name", "server"
    )
    key_id = re.search(r"key ([0-9a-f-]{36})", created.output)
    secret = created.output.strip().splitlines()[-1]
    assert key_id and secret.startswith("clw_")

    listed = run_cli(clarion, "keys", "list").output
    assert key_id.group(1) in listed
    assert secret not in listed
    assert "active" in listed

    run_cli(clarion, "keys", "revoke", key_id.group(1))
    [line] = [
        row
        for row in run_cli(clarion, "keys", "list").output.splitlines()
        if key_id.group(1) in row
    ]
    assert "revoked" in line


def test_keys_in_another_workspace(clarion: CliRunner) -> None:
    run_cli(clarion, "workspaces", "create", "shop-eu", "--name", "Shop EU")
    assert "shop-eu" in run_cli(clarion, "workspaces", "list").output
    created = run_cli(clarion, "keys", "create", "--scope", "read-only", "-w", "shop-eu")
    key_id = re.search(r"key ([0-9a-f-]{36})", created.output)
    assert key_id

    assert key_id.group(1) in run_cli(clarion, "keys", "list", "-w", "shop-eu").output
    assert key_id.group(1) not in run_cli(clarion, "keys", "list").output
    # Revoking through the wrong workspace finds nothing.
    failed = run_cli(clarion, "keys", "revoke", key_id.group(1), code=1)
    assert "No key" in failed.output


def test_bad_cli_input(clarion: CliRunner) -> None:
    assert "--source" in run_cli(clarion, "keys", "create", "--scope", "write", code=2).output
    assert "No workspace" in run_cli(clarion, "keys", "list", "-w", "nowhere", code=1).output
    run_cli(clarion, "keys", "create", "--scope", "root", code=2)
    run_cli(clarion, "keys", "revoke", "not-a-uuid", code=2)
    run_cli(clarion, "workspaces", "create", "dup")
    assert "already exists" in run_cli(clarion, "workspaces", "create", "dup", code=1).output
    # A dedicated worker names kinds that exist (and leaves some to run).
    refused = run_cli(clarion, "worker", "--only", "messages.deliver,nope", code=1).output
    assert "unknown job kinds: nope" in refused and "messages.deliver" in refused
    assert (
        "no job kind is left"
        in run_cli(
            clarion, "worker", "--only", "messages.deliver", "--skip", "messages.deliver", code=1
        ).output
    )


def test_commands_other_than_serve_start_without_the_api() -> None:
    """`clarion worker` and the other commands do not import the API (FastAPI and every
    router: about a third of a command's start-up); only `serve` does."""
    probe = (
        "import sys, clarion.cli.main; "
        "print(sorted(m for m in ('fastapi', 'clarion.app') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
