"""Secrets at rest: provider credentials (SMTP passwords, API tokens, private keys) are stored
encrypted with a key derived from Clarion's secret key, and read back only by the code that
uses them.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) gives authenticated encryption:
a changed or foreign ciphertext is refused, never decrypted to garbage. The key is derived
with HKDF per purpose, so the secret key itself never encrypts anything directly.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class UnreadableSecret(Exception):
    """A stored secret that this secret key cannot decrypt (changed key, or tampered)."""


class Vault:
    """Encrypts and decrypts JSON documents under a key derived from `secret_key`."""

    def __init__(self, secret_key: str, *, purpose: str = "credentials") -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"clarion {purpose}".encode(),
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, document: dict[str, Any]) -> str:
        """`document` encrypted, as text fit for a column."""
        return self._fernet.encrypt(orjson.dumps(document)).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        """The document `seal` encrypted; `UnreadableSecret` when this key cannot read it."""
        try:
            document = orjson.loads(self._fernet.decrypt(sealed.encode()))
        except (InvalidToken, orjson.JSONDecodeError, ValueError) as error:
            raise UnreadableSecret(
                "stored credentials cannot be read with this secret key"
            ) from error
        if not isinstance(document, dict):
            raise UnreadableSecret("stored credentials are not a JSON object")
        return document
