"""Secrets at rest: provider credentials (SMTP passwords, API tokens, private keys) are stored
encrypted with a key derived from Clarion's secret key, and read back only by the code that
uses them.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) gives authenticated encryption:
a changed or foreign ciphertext is refused, never decrypted to garbage. The key is derived
with HKDF per purpose, so the secret key itself never encrypts anything directly. While the
secret key is being rotated, what the previous keys sealed still opens (`MultiFernet`), and
`reseal` moves it to the current key.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarion.core.settings import SecretKeys


class UnreadableSecret(Exception):
    """A stored secret that no secret key held can decrypt (an unlisted key, or tampered)."""


class Vault:
    """Encrypts JSON documents under a key derived from the current secret key, and
    decrypts what it or a previous one sealed."""

    def __init__(self, keys: SecretKeys | str, *, purpose: str = "credentials") -> None:
        keys = SecretKeys(keys) if isinstance(keys, str) else keys
        self._current = _fernet(keys.current, purpose)
        self._any = MultiFernet([self._current, *(_fernet(k, purpose) for k in keys.previous)])

    def seal(self, document: dict[str, Any]) -> str:
        """`document` encrypted under the current key, as text fit for a column."""
        return self._current.encrypt(orjson.dumps(document)).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        """The document `seal` encrypted, under the current key or a previous one;
        `UnreadableSecret` when none of them can read it."""
        try:
            document = orjson.loads(self._any.decrypt(sealed.encode()))
        except (InvalidToken, orjson.JSONDecodeError, ValueError) as error:
            raise UnreadableSecret(
                "stored credentials cannot be read with this secret key"
            ) from error
        if not isinstance(document, dict):
            raise UnreadableSecret("stored credentials are not a JSON object")
        return document

    def reseal(self, sealed: str) -> str | None:
        """`sealed` encrypted anew under the current key when a previous key sealed it;
        None when the current key did. `UnreadableSecret` when no key can read it."""
        try:
            self._current.decrypt(sealed.encode())
        except (InvalidToken, ValueError):
            pass
        else:
            return None
        return self.seal(self.open(sealed))


def _fernet(secret_key: str, purpose: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"clarion {purpose}".encode(),
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))
