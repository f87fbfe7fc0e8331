"""`clarion suppressions` and `clarion consent`: what an operator does from a shell."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import run_cli


def test_suppressions_and_consent_from_the_command_line(clarion: CliRunner, tmp_path: Path) -> None:
    run_cli(clarion, "migrate")
    assert run_cli(clarion, "suppressions", "add", "email", " Ann@Example.org ").output.strip() == (
        "suppressed"
    )
    again = run_cli(clarion, "suppressions", "add", "email", "ann@example.org", "--detail", "x")
    assert again.output.strip() == "already suppressed"
    [line] = run_cli(clarion, "suppressions", "list").output.splitlines()
    assert line.split("\t")[1:4] == ["email", "ann@example.org", "manual"]
    bad = run_cli(clarion, "suppressions", "add", "fax", "123", code=1)
    assert "error:" in bad.output
    run_cli(clarion, "suppressions", "add", "sms", "+4722334455", "--reason", "complaint")
    complaints = run_cli(clarion, "suppressions", "list", "--reason", "complaint").output
    [complained] = complaints.splitlines()
    assert complained.split("\t")[1:4] == ["sms", "+4722334455", "complaint"]
    [manual] = run_cli(clarion, "suppressions", "list", "--reason", "manual").output.splitlines()
    assert manual.split("\t")[2] == "ann@example.org"
    for command in (["add", "email", "b@example.org"], ["list"]):
        refused = run_cli(clarion, "suppressions", *command, "--reason", "whim", code=2)
        assert "--reason" in refused.output
    run_cli(clarion, "suppressions", "remove", "sms", "+4722334455")
    assert run_cli(
        clarion, "suppressions", "remove", "email", "ann@example.org"
    ).output.strip() == ("removed")
    assert run_cli(clarion, "suppressions", "list").output == ""

    people = tmp_path / "people.csv"
    people.write_text("user_id,email\nu-1,u1@example.org\n")
    run_cli(clarion, "import", "profiles", str(people))
    assert run_cli(clarion, "consent", "show", "u-1").output == ""
    set_ = run_cli(clarion, "consent", "set", "u-1", "opted_out", "--channel", "email")
    assert set_.output.strip() == "email\t-\topted_out"
    [say] = run_cli(clarion, "consent", "show", "u-1").output.splitlines()
    assert say.split("\t")[:4] == ["email", "-", "opted_out", "api"]
    assert "error:" in run_cli(clarion, "consent", "show", "nobody", code=1).output
    assert "error:" in run_cli(clarion, "consent", "set", "u-1", "maybe", code=1).output
