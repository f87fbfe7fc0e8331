"""Fixtures: a TrackingPlans per test, live HTTP and GraphQL endpoints, and Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvicorn
from ariadne import QueryType, make_executable_schema
from ariadne.asgi import GraphQL
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import TrackingPlans
from tests.conftest import unreachable
from tests.support import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
CATALOG = {
    "A1": {"sku": "A1", "price": 12.5, "title": "Mug", "tags": ["kitchen"]},
    "B2": {"sku": "B2", "price": 99.0, "title": "Lamp", "tags": []},
}


class Stats:
    """What the endpoints saw: calls per key, and the most calls in flight at once."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def enter(self, key: str) -> None:
        with self._lock:
            self.calls[key] += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


STATS = Stats()

_SDL = """
type Query {
  product(sku: String!): Product
  slowProduct(sku: String!): Product
  broken: String
}
type Product { sku: String! price: Float title: String tags: [String!]! }
"""
_query = QueryType()


@_query.field("product")
async def _product(_: Any, info: Any, sku: str) -> dict[str, Any] | None:
    STATS.enter(f"graphql:{sku}")
    STATS.leave()
    return CATALOG.get(sku)


@_query.field("slowProduct")
async def _slow_product(_: Any, info: Any, sku: str) -> dict[str, Any] | None:
    await asyncio.sleep(3)
    return CATALOG.get(sku)


@_query.field("broken")
async def _broken(*_: Any) -> str:
    raise ValueError("the resolver broke")


async def _product_json(request: Request) -> Response:
    sku = request.path_params["sku"]
    STATS.enter(f"http:{sku}")
    try:
        delay = float(request.query_params.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        if sku.startswith("gen-"):
            return JSONResponse({"product": {"sku": sku, "price": 1.0}})
        if sku not in CATALOG:
            return JSONResponse({"error": "no such product"}, status_code=404)
        return JSONResponse({"product": CATALOG[sku], "asked": dict(request.query_params)})
    finally:
        STATS.leave()


async def _lookup(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"echo": body, "region": "EU" if body.get("ip") else None})


async def _whoami(request: Request) -> Response:
    STATS.enter("whoami")
    STATS.leave()
    return JSONResponse({"key": request.headers.get("x-api-key")})


async def _slow(request: Request) -> Response:
    await asyncio.sleep(3)
    return JSONResponse({"late": True})


async def _garbage(request: Request) -> Response:
    return PlainTextResponse("<html>not json</html>")


async def _broken_http(request: Request) -> Response:
    return JSONResponse({"error": "down"}, status_code=503)


def endpoints_app() -> Starlette:
    """HTTP JSON endpoints and a GraphQL API, as enrichment steps call them."""
    schema = make_executable_schema(_SDL, _query)
    return Starlette(
        routes=[
            Route("/products/{sku}", _product_json),
            Route("/lookup", _lookup, methods=["POST"]),
            Route("/whoami", _whoami),
            Route("/slow", _slow),
            Route("/garbage", _garbage),
            Route("/broken", _broken_http),
            Mount("/graphql", GraphQL(schema)),
        ]
    )


@pytest.fixture(scope="session")
def endpoints() -> Iterator[str]:
    """The base URL of the enrichment endpoints, served by uvicorn on loopback."""
    port = free_port()
    config = uvicorn.Config(endpoints_app(), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the endpoints server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def stats() -> Stats:
    """The endpoints' counters, reset for the test."""
    STATS.calls.clear()
    STATS.most_in_flight = 0
    return STATS


@pytest.fixture
async def plans(database: Database, settings: Settings) -> AsyncIterator[TrackingPlans]:
    """A TrackingPlans as one process holds it (no Redis)."""
    instance = TrackingPlans(database, settings, SystemClock())
    yield instance
    await instance.close()


@pytest.fixture
async def redis_url() -> str:
    """The test Redis; skipped when unreachable, except under CI where it fails."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        unreachable("Redis", exc)
    finally:
        await client.aclose()
    return REDIS_URL
