"""Settings: defaults, the generated secret key, and the README's table kept true."""

from __future__ import annotations

import multiprocessing
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from clarion.core.settings import SecretKeys, Settings, settings_table

README = Path(__file__).parents[2] / "README.md"


def test_the_default_database_is_a_sqlite_file_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'clarion.db'}"


def test_settings_come_from_clarion_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_DATABASE_URL", "postgresql://postgres@127.0.0.1/x")
    monkeypatch.setenv("CLARION_PORT", "9000")
    settings = Settings()
    assert settings.database_url == "postgresql://postgres@127.0.0.1/x"
    assert settings.port == 9000


def test_a_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).resolved_secret_key()
    second = Settings(data_dir=tmp_path).resolved_secret_key()

    assert first == second
    assert len(first) >= 48
    mode = (tmp_path / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def _key_after(barrier: Any, data_dir: Path, keys: Any) -> None:
    barrier.wait()
    try:
        keys.put(Settings(data_dir=data_dir).resolved_secret_key())
    except Exception as error:  # reported to the test, which fails on it
        keys.put(repr(error))


def test_processes_starting_together_share_one_whole_secret_key(tmp_path: Path) -> None:
    """A server and its workers started at once each make a key on first use: all end up
    with the one kept, never an error or a half-written key."""
    processes = 6
    context = multiprocessing.get_context("fork")
    for attempt in range(8):
        data_dir = tmp_path / str(attempt)
        barrier = context.Barrier(processes)
        keys = context.Queue()
        started = [
            context.Process(target=_key_after, args=(barrier, data_dir, keys))
            for _ in range(processes)
        ]
        for process in started:
            process.start()
        seen = [keys.get(timeout=30) for _ in started]
        for process in started:
            process.join(timeout=30)

        kept = (data_dir / "secret_key").read_text().strip()
        assert seen == [kept] * processes
        assert len(kept) >= 48
        assert [path.name for path in data_dir.iterdir()] == ["secret_key"]


def test_a_configured_secret_key_wins(tmp_path: Path) -> None:
    configured = "configured-secret-key"
    assert Settings(data_dir=tmp_path, secret_key=configured).resolved_secret_key() == configured
    assert not (tmp_path / "secret_key").exists()


def test_previous_secret_keys_come_after_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLARION_SECRET_KEY", "the-new-secret-key-01")
    monkeypatch.setenv(
        "CLARION_PREVIOUS_SECRET_KEYS",
        " the-old-secret-key-02 ,the-older-secret-key-3,the-old-secret-key-02",
    )
    keys = Settings(data_dir=tmp_path).secret_keys()
    assert keys == SecretKeys(
        "the-new-secret-key-01", ("the-old-secret-key-02", "the-older-secret-key-3")
    )
    assert Settings(data_dir=tmp_path, previous_secret_keys=None).secret_keys().previous == ()
    generated = Settings(data_dir=tmp_path / "fresh", secret_key=None).secret_keys()
    assert generated.current == (tmp_path / "fresh" / "secret_key").read_text().strip()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("secret_key", "too-short"),
        ("previous_secret_keys", "a-long-enough-previous-key,short"),
        ("previous_secret_keys", "a-long-enough-previous-key,"),
    ],
)
def test_short_secret_keys_are_refused_naming_the_setting(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})


def test_short_bootstrap_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="bootstrap_admin_token"):
        Settings(bootstrap_admin_token="short")


def test_readme_documents_every_setting() -> None:
    # Regenerate with `python -m clarion.core.settings` when a setting changes.
    assert settings_table() in README.read_text()
    rows = re.findall(r"^\| `(CLARION_[A-Z_]+)` \|", settings_table(), flags=re.MULTILINE)
    assert len(rows) == len(Settings.model_fields)
