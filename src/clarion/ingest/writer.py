"""Group commit for accepted events: each caller returns only after the commit holding its
rows, and requests that arrive while a transaction is in flight share the next one.

SQLite has one writer: a thread owns its writer connection and, after each commit, takes
every request queued meanwhile into the next transaction, without waiting on the event loop.
PostgreSQL commits in parallel: up to four transactions at once, each taking the requests
queued when it starts. A group that fails is retried request by request, so one bad request
cannot fail the others.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clarion.core.database import Database
from clarion.core.jobs.queue import enqueue, enqueue_sqlite
from clarion.core.jobs.wakeup import notify_local
from clarion.ingest.jobs import StoredEvent, processing_jobs
from clarion.ingest.store import encode_sqlite, insert_events_postgres, insert_events_sqlite

POSTGRES_TRANSACTIONS = 4
Key = tuple[int, str]  # (workspace id, messageId)


@dataclass(eq=False)
class _Pending:
    rows: list[dict[str, Any]]
    encoded: list[tuple[Any, ...]]  # the rows as SQLite stores them; empty on PostgreSQL
    loop: asyncio.AbstractEventLoop
    stored: asyncio.Future[int]
    taken: bool = False  # in a group that is committing


@dataclass
class _Group:
    """The distinct rows of several requests; of repeated messageIds the first one wins."""

    members: list[_Pending]
    owner: dict[Key, _Pending] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    encoded: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for pending in self.members:
            for index, row in enumerate(pending.rows):
                key = (row["workspace_id"], row["message_id"])
                if key not in self.owner:
                    self.owner[key] = pending
                    self.rows.append(row)
                    if pending.encoded:
                        self.encoded.append(pending.encoded[index])

    def received_at(self) -> datetime:
        """When the group's latest request arrived: the time its jobs are enqueued at."""
        latest: datetime = max(row["received_at"] for row in self.rows)
        return latest

    def settle(self, stored: list[StoredEvent]) -> None:
        """Tell each member how many of its rows were new."""
        counts = Counter(id(self.owner[(event.workspace_id, event.message_id)]) for event in stored)
        for pending in self.members:
            _settle(pending, result=counts[id(pending)])


class EventWriter:
    """Stores event rows for many concurrent requests in shared transactions.

    `transactions` is how many PostgreSQL transactions may be in flight at once; SQLite has
    one writer thread. Call `close()` when done, so that thread ends.
    """

    def __init__(self, database: Database, *, transactions: int | None = None) -> None:
        self._database = database
        self._queue: list[_Pending] = []
        self._slots = asyncio.Semaphore(transactions or POSTGRES_TRANSACTIONS)
        self._sqlite: _SqliteWriterThread | None = None
        self.commits = 0  # transactions committed, for metrics

    async def store(self, rows: list[dict[str, Any]]) -> int:
        """Store the rows, skipping messageIds already stored; the count new, once committed."""
        loop = asyncio.get_running_loop()
        if self._database.is_sqlite:
            # Encoded here, on arrival, so the single writer only inserts.
            pending = _Pending(rows, encode_sqlite(rows), loop, loop.create_future())
            if self._sqlite is None:
                self._sqlite = _SqliteWriterThread(self._database.open_sqlite_writer, self)
            self._sqlite.submit(pending)
            return await pending.stored
        pending = _Pending(rows, [], loop, loop.create_future())
        self._queue.append(pending)
        async with self._slots:
            if not pending.taken:  # nobody took it into their group: lead the next one
                group, self._queue = self._queue, []
                for member in group:
                    member.taken = True
                # Shielded: a caller going away must not abandon the others' commit.
                await asyncio.shield(self._commit_postgres(_Group(group)))
        return await pending.stored

    async def close(self) -> None:
        """Finish what is queued and stop the SQLite writer thread, if one runs."""
        if self._sqlite is not None:
            sqlite, self._sqlite = self._sqlite, None
            await asyncio.to_thread(sqlite.stop)

    async def _commit_postgres(self, group: _Group) -> None:
        try:
            stored: list[StoredEvent] = []
            if group.rows:
                async with self._database.write_session() as session:
                    stored = await insert_events_postgres(session, group.rows)
                    await enqueue(session, processing_jobs(stored), now=group.received_at())
                    await session.commit()
            self.commits += 1
        except Exception as exc:
            if len(group.members) > 1:
                for pending in group.members:
                    await self._commit_postgres(_Group([pending]))
                return
            _settle(group.members[0], exception=exc)
            return
        group.settle(stored)


class _SqliteWriterThread:
    """Owns SQLite's writer connection; commits all queued requests per transaction."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], writer: EventWriter) -> None:
        self._connect = connect
        self._writer = writer
        self._jobs: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clarion-event-writer", daemon=True)
        self._thread.start()

    def submit(self, pending: _Pending) -> None:
        self._jobs.put(pending)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        running = True
        while running:
            first = self._jobs.get()
            if first is None:
                break
            members = [first]
            while True:  # everything queued since the last commit joins this one
                try:
                    pending = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    running = False
                    break
                members.append(pending)
            try:
                connection = connection or self._connect()
            except Exception as exc:  # answer the callers; try again with the next group
                for pending in members:
                    _settle(pending, exception=exc)
                continue
            self._commit(connection, _Group(members))
        if connection is not None:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, group: _Group) -> None:
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                stored = insert_events_sqlite(connection, group.encoded) if group.rows else []
                if stored:
                    enqueue_sqlite(connection, processing_jobs(stored), now=group.received_at())
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            self._writer.commits += 1
            if stored:
                notify_local()
        except Exception as exc:
            if len(group.members) > 1:
                for pending in group.members:
                    self._commit(connection, _Group([pending]))
                return
            _settle(group.members[0], exception=exc)
            return
        group.settle(stored)


def _settle(pending: _Pending, *, result: int = 0, exception: Exception | None = None) -> None:
    """Resolve a caller's future on its own event loop, from any thread."""

    def resolve() -> None:
        if pending.stored.done():  # its caller has gone
            return
        if exception is not None:
            pending.stored.set_exception(exception)
        else:
            pending.stored.set_result(result)

    pending.loop.call_soon_threadsafe(resolve)
