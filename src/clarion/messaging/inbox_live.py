"""Live inbox delivery: telling open `/inbox/v1/stream` connections about new messages.

    deliver_to_inbox ─ commit ─► PostgreSQL: NOTIFY clarion_inbox ─► every process's LISTEN ─┐
                     └ commit ─► SQLite: this process's broker ──────────────────────────────┤
                                                                              BROKER.publish(notice)
                                                                                             │
                                           this process's streams of (workspace, profile) ◄──┘

A `Notice` names a message and its owner, never its content: each stream loads what it
sends from the database, scoped to its own customer. PostgreSQL delivers a NOTIFY only
when its transaction commits, and the SQLite path publishes from an `after_commit` hook, so
no stream ever hears of a message that was rolled back. Each event loop that holds streams
keeps one LISTEN connection per database while it has any (and re-opens it when lost;
notices sent meanwhile are missed, so clients re-read the list when they reconnect).

On SQLite, live delivery reaches streams of the same process only: the embedded default
runs API and workers in one process. Streams end on client disconnect, when `stop_all()` is
called, and when the uvicorn server of the process starts shutting down (`server_stopping`,
polled twice a second while streams are open): uvicorn waits for open responses before it
shuts the application down, so without this an open stream would hold shutdown forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import asyncpg  # type: ignore[import-untyped]

CHANNEL = "clarion_inbox"
HEARTBEAT_SECONDS = 15.0
QUEUE_LIMIT = 256  # notices waiting per stream; beyond it a slow reader misses some
log = logging.getLogger(__name__)


class Notice(NamedTuple):
    """A message just delivered to a profile's inbox."""

    workspace_id: int
    profile_id: uuid.UUID
    message_id: uuid.UUID

    def encode(self) -> str:
        """The notice as a NOTIFY payload."""
        return f"{self.workspace_id}:{self.profile_id}:{self.message_id}"

    @classmethod
    def decode(cls, payload: str) -> Notice | None:
        """The notice in a NOTIFY payload; None for anything else."""
        try:
            workspace, profile, message = payload.split(":")
            return cls(int(workspace), uuid.UUID(profile), uuid.UUID(message))
        except ValueError:
            return None


class _Stop:
    """What a subscription yields when its stream must end."""


STOP: Final = _Stop()
Item = uuid.UUID | _Stop | None


def server_stopping() -> bool:
    """Whether the uvicorn server of this process has started shutting down: `uvicorn.run`
    (as in `clarion serve`) installs its `Server.handle_exit` as the SIGTERM handler, and
    that server's `should_exit` turns true on SIGINT / SIGTERM."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return getattr(server, "should_exit", False) is True


class Subscription:
    """One stream's queue of message ids, fed from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, keys: set[tuple[int, uuid.UUID]]):
        self.loop = loop
        self.keys = keys
        self._queue: asyncio.Queue[uuid.UUID | _Stop] = asyncio.Queue(QUEUE_LIMIT)

    def offer(self, item: uuid.UUID | _Stop) -> None:
        """Queue `item` for the stream, from any thread; dropped when the queue is full."""
        if self.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._put(item)
        else:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: uuid.UUID | _Stop) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(item)

    async def next(self, seconds: float) -> Item:
        """The next message id, STOP when the stream must end, or None after `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                return await self._queue.get()
        except TimeoutError:
            return None


@dataclass
class _Listener:
    task: asyncio.Task[None]
    ready: asyncio.Event
    users: int = 0


@dataclass
class _LoopState:
    streams: set[Subscription] = field(default_factory=set)
    listeners: dict[str, _Listener] = field(default_factory=dict)
    watcher: asyncio.Task[None] | None = None


class InboxBroker:
    """Routes notices to the streams of this process; one per process (`BROKER`)."""

    def __init__(
        self,
        *,
        stopping: Callable[[], bool] = server_stopping,
        watch_seconds: float = 0.5,
        listen_retry_seconds: float = 5.0,
        listen_ready_seconds: float = 5.0,
    ) -> None:
        self._stopping = stopping
        self._watch_seconds = watch_seconds
        self._listen_retry_seconds = listen_retry_seconds
        self._listen_ready_seconds = listen_ready_seconds
        self._lock = threading.Lock()
        self._by_key: dict[tuple[int, uuid.UUID], set[Subscription]] = {}
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def publish(self, notice: Notice) -> int:
        """Tell the streams of the notice's profile (from any thread); how many there were."""
        with self._lock:
            streams = list(self._by_key.get((notice.workspace_id, notice.profile_id), ()))
        for stream in streams:
            stream.offer(notice.message_id)
        return len(streams)

    def stop_all(self) -> None:
        """End every stream of this process (from any thread)."""
        with self._lock:
            streams = [s for state in self._loops.values() for s in state.streams]
        for stream in streams:
            stream.offer(STOP)

    def stream_count(self) -> int:
        """How many streams are subscribed in this process."""
        with self._lock:
            return sum(len(state.streams) for state in self._loops.values())

    def rekey(
        self, subscription: Subscription, *, workspace_id: int, profile_ids: Iterable[uuid.UUID]
    ) -> None:
        """Point the subscription at these profiles of the workspace instead."""
        with self._lock:
            self._unkey(subscription)
            subscription.keys = {(workspace_id, profile_id) for profile_id in profile_ids}
            for key in subscription.keys:
                self._by_key.setdefault(key, set()).add(subscription)

    def _unkey(self, subscription: Subscription) -> None:
        for key in subscription.keys:
            streams = self._by_key.get(key)
            if streams is not None:
                streams.discard(subscription)
                if not streams:
                    del self._by_key[key]

    @asynccontextmanager
    async def subscribe(
        self, *, workspace_id: int, profile_ids: Iterable[uuid.UUID], dsn: str | None
    ) -> AsyncIterator[Subscription]:
        """A subscription to the profiles' new messages for the block's length; with a
        PostgreSQL `dsn`, once this loop LISTENs (or gave up waiting for it)."""
        loop = asyncio.get_running_loop()
        subscription = Subscription(loop, set())
        with self._lock:
            state = self._loops.setdefault(loop, _LoopState())
            state.streams.add(subscription)
        self.rekey(subscription, workspace_id=workspace_id, profile_ids=profile_ids)
        if state.watcher is None:
            state.watcher = loop.create_task(self._watch(state), name="clarion-inbox-watch")
        listener = self._listener(state, dsn) if dsn is not None else None
        try:
            if listener is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._listen_ready_seconds):
                        await listener.ready.wait()
            yield subscription
        finally:
            with self._lock:
                self._unkey(subscription)
                state.streams.discard(subscription)
                idle = not state.streams
                if idle:
                    self._loops.pop(loop, None)
            if listener is not None:
                listener.users -= 1
                if listener.users == 0:
                    state.listeners.pop(dsn or "", None)
                    await _cancel(listener.task)
            if idle and state.watcher is not None:
                await _cancel(state.watcher)
                state.watcher = None

    def _listener(self, state: _LoopState, dsn: str) -> _Listener:
        """This loop's LISTEN connection to `dsn`, started if need be, with one more user."""
        listener = state.listeners.get(dsn)
        if listener is None:
            ready = asyncio.Event()
            task = asyncio.create_task(self._listen(dsn, ready), name="clarion-inbox-listen")
            listener = state.listeners[dsn] = _Listener(task, ready)
        listener.users += 1
        return listener

    async def _listen(self, dsn: str, ready: asyncio.Event) -> None:
        """LISTEN for notices and publish each one, until cancelled; a lost connection is
        re-opened."""
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(dsn)
                await connection.add_listener(CHANNEL, self._on_notification)
                ready.set()
                await _until_closed(connection)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("live inbox notifications unavailable (%s); retrying", exc)
            finally:
                if connection is not None and not connection.is_closed():
                    await connection.close()
            await asyncio.sleep(self._listen_retry_seconds)

    def _on_notification(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        notice = Notice.decode(payload)
        if notice is not None:
            self.publish(notice)

    async def _watch(self, state: _LoopState) -> None:
        """End this loop's streams once the server starts shutting down."""
        while True:
            await asyncio.sleep(self._watch_seconds)
            if self._stopping():
                with self._lock:
                    streams = list(state.streams)
                for stream in streams:
                    stream.offer(STOP)
                return


async def _until_closed(connection: asyncpg.Connection) -> None:
    closed = asyncio.Event()
    connection.add_termination_listener(lambda *_: closed.set())
    await closed.wait()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


BROKER = InboxBroker()


async def event_stream(
    *,
    broker: InboxBroker,
    workspace_id: int,
    resolve: Callable[[], Awaitable[list[uuid.UUID]]],
    load: Callable[[uuid.UUID], Awaitable[str | None]],
    dsn: str | None,
    heartbeat: float = HEARTBEAT_SECONDS,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The Server-Sent Events of one inbox connection: first a `retry` field and a
    `: connected` comment (sent once the subscription is live), then `event: message` with
    `load(id)`'s JSON as each message arrives, and a `: heartbeat` comment after
    `heartbeat` seconds without one. `resolve()` names the customer's profiles; while it
    names none (no profile yet) it is asked again at every heartbeat. At every heartbeat
    the stream ends if `still_allowed()` says the credentials it opened with no longer
    hold (they were rotated): the client reconnects and must prove itself again."""
    async with broker.subscribe(
        workspace_id=workspace_id, profile_ids=await resolve(), dsn=dsn
    ) as subscription:
        yield b"retry: 3000\n: connected\n\n"
        while True:
            item = await subscription.next(heartbeat)
            if isinstance(item, _Stop):
                return
            if item is None:
                if still_allowed is not None and not await still_allowed():
                    return
                if not subscription.keys:
                    broker.rekey(
                        subscription, workspace_id=workspace_id, profile_ids=await resolve()
                    )
                yield b": heartbeat\n\n"
                continue
            data = await load(item)
            if data is not None:
                yield f"event: message\nid: {item}\ndata: {data}\n\n".encode()
