"""Credentials at rest: sealed under the secret key, unreadable under another or altered."""

from __future__ import annotations

import pytest

from clarion.core.crypto import UnreadableSecret, Vault
from clarion.core.settings import SecretKeys


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


def test_while_rotating_what_a_previous_key_sealed_opens_and_is_sealed_again() -> None:
    old, new = "o" * 48, "n" * 48
    by_old = Vault(old).seal({"password": "s3cret"})
    rotating = Vault(SecretKeys(new, ("p" * 48, old)))
    assert rotating.open(by_old) == {"password": "s3cret"}
    resealed = rotating.reseal(by_old)
    assert resealed is not None
    assert Vault(new).open(resealed) == {"password": "s3cret"}  # the old key no longer needed
    with pytest.raises(UnreadableSecret):
        Vault(old).open(resealed)
    assert rotating.reseal(resealed) is None  # already under the current key
    assert rotating.reseal(rotating.seal({"x": 1})) is None
    with pytest.raises(UnreadableSecret):  # sealed under a key no longer listed
        rotating.reseal(Vault("q" * 48).seal({"x": 1}))
    with pytest.raises(UnreadableSecret):
        Vault(new).open(by_old)
