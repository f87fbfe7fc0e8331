"""Credentials at rest: sealed under the secret key, unreadable under another or altered."""

from __future__ import annotations

import pytest

from clarion.core.crypto import UnreadableSecret, Vault


def test_a_sealed_document_opens_with_the_same_key_only() -> None:
    vault = Vault("a" * 48)
    sealed = vault.seal({"password": "s3cret", "port": 587})
    assert "s3cret" not in sealed
    assert vault.open(sealed) == {"password": "s3cret", "port": 587}
    assert Vault("a" * 48).open(sealed) == {"password": "s3cret", "port": 587}
    with pytest.raises(UnreadableSecret):
        Vault("b" * 48).open(sealed)
    with pytest.raises(UnreadableSecret):
        Vault("a" * 48, purpose="other").open(sealed)


def test_an_altered_or_foreign_text_is_refused() -> None:
    vault = Vault("a" * 48)
    sealed = vault.seal({"token": "t"})
    altered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    for bad in (altered, "", "not a token", sealed[:20]):
        with pytest.raises(UnreadableSecret):
            vault.open(bad)


def test_each_seal_differs() -> None:
    vault = Vault("a" * 48)
    assert vault.seal({"x": 1}) != vault.seal({"x": 1})
