"""Helpers for tests that need real servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy.event import listen, remove

from clarion.app import create_app
from clarion.core.database import Database
from clarion.core.outbound import Policy, parse_networks
from clarion.core.settings import Settings

LOOPBACK_NETWORKS = "127.0.0.0/8,::1"
"""Where the tests' fake providers and receivers listen (`CLARION_OUTBOUND_ALLOWED_NETWORKS`
of the tests' settings)."""
LOOPBACK = Policy(parse_networks(LOOPBACK_NETWORKS))
"""Outbound calls may reach the tests' fake providers and receivers on loopback."""


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    """A server running in a background thread."""

    url: str


@contextmanager
def start_live_server(settings: Settings) -> Iterator[LiveServer]:
    """Run Clarion with uvicorn on a free loopback port until the block ends."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, run_worker=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def plan_of(database: Database, run: Callable[[], Awaitable[object]], matching: str) -> str:
    """PostgreSQL's plan (`EXPLAIN (COSTS OFF)`) for the last statement containing
    `matching` that `run` executed, with the parameters it was given."""
    statements: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if matching in statement:
            statements.append((statement, params))

    listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await run()
    finally:
        remove(database.engine.sync_engine, "before_cursor_execute", capture)
    statement, params = statements[-1]
    async with database.engine.connect() as connection:
        rows = await connection.exec_driver_sql(f"EXPLAIN (COSTS OFF) {statement}", params)
        return "\n".join(str(row[0]) for row in rows)
