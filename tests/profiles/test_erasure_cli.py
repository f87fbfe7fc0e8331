"""`clarion profiles erase`: a person erased from a shell, with or without their addresses
suppressed, against both databases; an unknown profile or a malformed id changes nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import run_cli


def profile_ids(clarion: CliRunner) -> dict[str, str]:
    """The workspace's profiles by user id."""
    lines = run_cli(clarion, "export", "profiles", "-f", "jsonl").output.splitlines()
    return {
        identity["value"]: profile["id"]
        for profile in map(json.loads, lines)
        for identity in profile["identities"]
        if identity["kind"] == "user_id"
    }


def test_a_person_is_erased_from_the_command_line(clarion: CliRunner, tmp_path: Path) -> None:
    run_cli(clarion, "migrate")
    people = tmp_path / "people.csv"
    people.write_text(
        "user_id,email,phone,plan\n"
        "ann,Ann@Example.org,+44 20 7946 0001,pro\n"
        "bob,bob@example.org,,free\n"
    )
    run_cli(clarion, "import", "profiles", str(people))
    ids = profile_ids(clarion)
    run_cli(clarion, "consent", "set", "ann", "opted_out", "--channel", "email")

    erased = run_cli(clarion, "profiles", "erase", ids["ann"], "--suppress").output.splitlines()
    assert erased[0] == f"erased profile {ids['ann']} with 0 merged into it"
    counts = dict(line.split("\t") for line in erased[1:])
    assert counts["profiles"] == "1"
    assert counts["identities"] == "3"  # user id, email, phone
    assert counts["trait_changes"] == "3"  # email, phone, plan
    assert counts["addresses suppressed"] == "2"
    assert profile_ids(clarion) == {"bob": ids["bob"]}
    listed = run_cli(clarion, "suppressions", "list").output.splitlines()
    assert sorted(line.split("\t")[1:4] for line in listed) == [
        ["email", "ann@example.org", "erased"],
        ["sms", "+442079460001", "erased"],
    ]
    assert "error:" in run_cli(clarion, "consent", "show", "ann", code=1).output

    # Without --suppress nothing is added to the list, and nothing said about it.
    plain = run_cli(clarion, "profiles", "erase", ids["bob"], "-w", "default").output
    assert "addresses suppressed" not in plain and "profiles\t1" in plain
    assert profile_ids(clarion) == {}
    assert len(run_cli(clarion, "suppressions", "list").output.splitlines()) == 2


def test_an_unknown_profile_or_a_malformed_id_erases_nothing(clarion: CliRunner) -> None:
    run_cli(clarion, "migrate")
    nobody = uuid.uuid4()
    unknown = run_cli(clarion, "profiles", "erase", str(nobody), code=1)
    assert f"error: No profile {nobody} in this workspace." in unknown.output
    malformed = run_cli(clarion, "profiles", "erase", "not-a-uuid", code=2)
    assert "Invalid value for 'profile_id'" in malformed.output
    assert "valid UUID" in malformed.output
    assert "No workspace" in (
        run_cli(clarion, "profiles", "erase", str(nobody), "-w", "nowhere", code=1).output
    )
    run_cli(clarion, "profiles", "erase", code=2)  # an id is required
    assert run_cli(clarion, "suppressions", "list").output == ""
