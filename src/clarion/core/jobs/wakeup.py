"""Waking idle workers the moment work is committed.

In-process: `notify_local()` wakes every worker of this process; enqueuers call it after the
commit that holds their jobs (from any thread). Across processes on PostgreSQL, enqueuing
sends `NOTIFY clarion_jobs` in the enqueuing transaction, which PostgreSQL delivers only on
commit, and each worker LISTENs on a connection of its own. Polling remains the fallback,
so a lost notification only delays work by one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref

import asyncpg  # type: ignore[import-untyped]

CHANNEL = "clarion_jobs"
log = logging.getLogger(__name__)


class Wakeup:
    """A flag a worker waits on; safe to raise from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        with _LOCK:
            _WAKEUPS.add(self)

    def notify(self) -> None:
        """Wake the waiter, from any thread."""
        if _on_loop(self._loop):
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, seconds: float) -> bool:
        """Wait until notified or `seconds` pass; whether it was notified."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        notified = self._event.is_set()
        self._event.clear()
        return notified


_WAKEUPS: weakref.WeakSet[Wakeup] = weakref.WeakSet()
_LOCK = threading.Lock()


def notify_local() -> None:
    """Wake every worker of this process (call after committing jobs)."""
    with _LOCK:
        wakeups = list(_WAKEUPS)
    for wakeup in wakeups:
        wakeup.notify()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def listen_postgres(dsn: str, wakeup: Wakeup, *, retry_seconds: float = 5.0) -> None:
    """LISTEN for committed jobs and wake `wakeup` on each notification, until cancelled.

    A lost connection is re-opened; meanwhile the worker's polling carries on.
    """
    while True:
        connection: asyncpg.Connection | None = None
        try:
            connection = await asyncpg.connect(dsn)
            await connection.add_listener(CHANNEL, lambda *_: wakeup.notify())
            wakeup.notify()  # jobs may have been committed while nobody listened
            await _until_closed(connection)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("job notifications unavailable (%s); polling meanwhile", exc)
        finally:
            if connection is not None and not connection.is_closed():
                await connection.close()
        await asyncio.sleep(retry_seconds)


async def _until_closed(connection: asyncpg.Connection) -> None:
    closed = asyncio.Event()
    connection.add_termination_listener(lambda *_: closed.set())
    await closed.wait()
