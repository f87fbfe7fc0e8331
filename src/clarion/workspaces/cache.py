"""Write keys recently found valid, so ingestion does not query for its key on every request.

An entry lives `ttl` seconds. Revoking a key through this process clears the cache at once;
another process (a second server, the CLI) sees the revocation within `ttl`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from clarion.workspaces.service import hash_key

WRITE_KEY_TTL_S = 5.0
_MAX_ENTRIES = 10_000


class WriteKeyCache:
    """(workspace id, source id) of write keys seen valid in the last `ttl` seconds."""

    def __init__(
        self, *, ttl: float = WRITE_KEY_TTL_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, int, uuid.UUID]] = {}

    def get(self, secret: str) -> tuple[int, uuid.UUID] | None:
        """The key's workspace and source if it was valid within `ttl`, else None."""
        entry = self._entries.get(hash_key(secret))
        if entry is None or entry[0] < self._monotonic():
            return None
        return entry[1], entry[2]

    def put(self, secret: str, *, workspace_id: int, source_id: uuid.UUID) -> None:
        """Remember that the key is valid, for `ttl` seconds."""
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        expires = self._monotonic() + self._ttl
        self._entries[hash_key(secret)] = (expires, workspace_id, source_id)

    def clear(self) -> None:
        """Forget every key (after a revocation)."""
        self._entries.clear()
