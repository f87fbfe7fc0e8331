"""Group commit for accepted events: requests that arrive while every transaction slot is
busy share the next transaction, and each caller returns only after the commit holding its rows.

SQLite commits one transaction at a time, so one transaction per request caps ingestion at
the commit rate; sharing commits lifts that cap without weakening the promise that a 200
means stored. PostgreSQL gets several slots, so its commits also run side by side. A group
that fails is retried request by request, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from clarion.core.database import Database
from clarion.ingest.store import encode_sqlite, insert_events_postgres, insert_events_sqlite

POSTGRES_TRANSACTIONS = 4


@dataclass(eq=False)
class _Waiting:
    rows: list[dict[str, Any]]
    encoded: list[tuple[Any, ...]]  # the rows as the SQLite writer inserts them, else empty
    taken: bool = False  # in a group that is committing
    stored: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class EventWriter:
    """Stores event rows for many concurrent requests in shared transactions."""

    def __init__(self, database: Database, *, transactions: int | None = None) -> None:
        self._database = database
        self._queue: list[_Waiting] = []
        # SQLite has one writer; PostgreSQL commits in parallel.
        slots = transactions or (1 if database.is_sqlite else POSTGRES_TRANSACTIONS)
        self._slots = asyncio.Semaphore(slots)
        self.commits = 0  # transactions committed, for metrics

    async def store(self, rows: list[dict[str, Any]]) -> int:
        """Store the rows, skipping messageIds already stored; the count new, once committed."""
        # Encoded on arrival, while another group may be committing, not inside the commit.
        waiting = _Waiting(rows, encode_sqlite(rows) if self._database.is_sqlite else [])
        self._queue.append(waiting)
        async with self._slots:
            if not waiting.taken:  # nobody took it into their group: lead the next one
                group, self._queue = self._queue, []
                for member in group:
                    member.taken = True
                # Shielded: a caller going away must not abandon the others' commit.
                await asyncio.shield(self._commit(group))
        return await waiting.stored

    async def _commit(self, group: list[_Waiting]) -> None:
        owner: dict[tuple[int, str], _Waiting] = {}
        rows: list[dict[str, Any]] = []
        encoded: list[tuple[Any, ...]] = []
        for waiting in group:
            for index, row in enumerate(waiting.rows):
                key = (row["workspace_id"], row["message_id"])
                if key not in owner:
                    owner[key] = waiting
                    rows.append(row)
                    if waiting.encoded:
                        encoded.append(waiting.encoded[index])
        try:
            stored = await self._insert(rows, encoded) if rows else set()
            self.commits += 1
        except Exception as exc:
            if len(group) > 1:
                for waiting in group:
                    await self._commit([waiting])
                return
            _settle(group[0], exception=exc)
            return
        counts = Counter(id(owner[key]) for key in stored)
        for waiting in group:
            _settle(waiting, result=counts[id(waiting)])

    async def _insert(
        self, rows: list[dict[str, Any]], encoded: list[tuple[Any, ...]]
    ) -> set[tuple[int, str]]:
        if self._database.is_sqlite:
            work = partial(insert_events_sqlite, encoded=encoded)
            return await self._database.run_sqlite_write(work)
        async with self._database.write_session() as session:
            stored = await insert_events_postgres(session, rows)
            await session.commit()
        return stored


def _settle(
    waiting: _Waiting, *, result: int | None = None, exception: Exception | None = None
) -> None:
    if waiting.stored.done():  # its caller has gone
        return
    if exception is not None:
        waiting.stored.set_exception(exception)
    else:
        waiting.stored.set_result(result or 0)
