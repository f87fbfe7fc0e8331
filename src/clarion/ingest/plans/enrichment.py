"""Enrichment: calling the HTTP (JSON) and GraphQL endpoints a plan names, for a batch.

A step resolves its variables from the event, makes one request, and maps values from the
answer to new properties. A step fails as a whole (adds nothing) on a timeout, a refused
connection, a non-2xx status, a body that is not JSON (or over 256 KB), GraphQL `errors`, or
a mapped path with no value (null counts as none); other steps of the event still apply.

Guards, so one slow endpoint cannot hold a batch: each call has the step's timeout (covering
connect, send and the whole body); at most `MAX_CONCURRENT_CALLS` run at once per batch; a
batch stops starting calls after `BATCH_BUDGET_S`; and after `BREAKER_FAILURES` timeouts or
connection failures of one step in a batch, its remaining calls fail at once. Identical
requests in a batch are made once; answers are cached for the step's `cache_ttl_s` (by
resolved request and mapping, at most `CACHE_ENTRIES`, least recently used evicted).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from clarion.core import outbound
from clarion.core.clock import Clock
from clarion.ingest.plans.paths import MISSING, document_value, event_value
from clarion.ingest.plans.schemas import EnrichmentStep
from clarion.ingest.records import EventRecord

MAX_CONCURRENT_CALLS = 16
BATCH_BUDGET_S = 15.0
BREAKER_FAILURES = 3
CACHE_ENTRIES = 10_000
MAX_RESPONSE_BYTES = 256 * 1024


class EnrichmentFailed(Exception):
    """A step could not add its properties; the message says why."""


@dataclass(frozen=True, slots=True)
class Call:
    """A step's request, resolved for one event."""

    step: EnrichmentStep
    method: str
    url: str
    params: dict[str, str] | None
    body: Any
    key: str  # identifies the request and mapping: cache and single-flight key


def resolve(step: EnrichmentStep, event: EventRecord) -> Call:
    """The request a step makes for `event`; EnrichmentFailed when a variable is absent."""
    values: dict[str, Any] = {}
    for name, path in step.variables.items():
        value = event_value(event, path)
        if value is MISSING:
            raise EnrichmentFailed(f"step {step.name!r}: the event has no value at {path!r}")
        values[name] = value
    url, params, body = step.url, None, None
    if step.kind == "graphql":
        method, body = "POST", {"query": step.query, "variables": values}
    else:
        method = step.method
        remaining = {}
        for name, value in values.items():
            placeholder = "{" + name + "}"
            if placeholder in url:
                url = url.replace(placeholder, quote(_text(value), safe=""))
            else:
                remaining[name] = value
        if method == "GET":
            params = {name: _text(value) for name, value in remaining.items()} or None
        else:
            body = remaining
    identity = [method, url, params, body, sorted(step.headers.items()), sorted(step.mapping)]
    key = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Call(step, method, url, params, body, key)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


@dataclass
class Batch:
    """One review's calls: the concurrency cap, time budget, breaker and single-flight."""

    deadline: float
    semaphore: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_CALLS)
    )
    inflight: dict[str, asyncio.Task[dict[str, Any]]] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)


class Enricher:
    """Makes enrichment calls through one shared HTTP client, with a response cache."""

    def __init__(
        self,
        clock: Clock,
        *,
        client: httpx.AsyncClient | None = None,
        policy: outbound.Policy | None = None,
    ) -> None:
        """Calls go through `client` when given, else through one that reaches only the
        addresses `policy` permits (public ones by default)."""
        self._clock = clock
        self._client = client or outbound.http_client(
            policy or outbound.PUBLIC_ONLY,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self._cache: OrderedDict[str, tuple[datetime, dict[str, Any]]] = OrderedDict()

    def batch(self) -> Batch:
        """A fresh batch context for one review."""
        return Batch(deadline=asyncio.get_running_loop().time() + BATCH_BUDGET_S)

    async def run(self, call: Call, batch: Batch) -> dict[str, Any]:
        """The properties the call adds; EnrichmentFailed says why there are none."""
        cached = self._cached(call.key)
        if cached is not None:
            return cached
        task = batch.inflight.get(call.key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(call, batch))
            batch.inflight[call.key] = task
        return await asyncio.shield(task)

    def _cached(self, key: str) -> dict[str, Any] | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock.now():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry[1]

    def _remember(self, call: Call, added: dict[str, Any]) -> None:
        if call.step.cache_ttl_s <= 0:
            return
        expires = self._clock.now() + timedelta(seconds=call.step.cache_ttl_s)
        self._cache[call.key] = (expires, added)
        self._cache.move_to_end(call.key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _fetch(self, call: Call, batch: Batch) -> dict[str, Any]:
        step = call.step
        breaker = (step.url, step.name)
        async with batch.semaphore:
            if batch.failures.get(breaker, 0) >= BREAKER_FAILURES:
                raise EnrichmentFailed(
                    f"step {step.name!r}: skipped after {BREAKER_FAILURES} failed calls "
                    "in this batch"
                )
            remaining = batch.deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise EnrichmentFailed(
                    f"step {step.name!r}: skipped, the batch's {BATCH_BUDGET_S:g} s "
                    "enrichment budget is spent"
                )
            timeout = min(step.timeout_s, remaining)
            try:
                async with asyncio.timeout(timeout):
                    status, body = await self._send(call, limit=timeout)
            except (TimeoutError, httpx.TimeoutException):
                batch.failures[breaker] = batch.failures.get(breaker, 0) + 1
                raise EnrichmentFailed(
                    f"step {step.name!r}: no answer within {timeout:g} s"
                ) from None
            except httpx.HTTPError as exc:
                batch.failures[breaker] = batch.failures.get(breaker, 0) + 1
                raise EnrichmentFailed(
                    f"step {step.name!r}: request failed ({type(exc).__name__}: {exc})"
                ) from None
        added = extract(step, status, body)
        self._remember(call, added)
        return added

    async def _send(self, call: Call, *, limit: float) -> tuple[int, bytes]:
        request = self._client.build_request(
            call.method,
            call.url,
            params=call.params,
            json=call.body,
            headers={"Accept": "application/json", **call.step.headers},
            timeout=httpx.Timeout(limit),
        )
        response = await self._client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise EnrichmentFailed(
                        f"step {call.step.name!r}: the answer is over "
                        f"{MAX_RESPONSE_BYTES // 1024} KB"
                    )
        finally:
            await response.aclose()
        return response.status_code, bytes(body)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def extract(step: EnrichmentStep, status: int, body: bytes) -> dict[str, Any]:
    """The mapped values of an answer; EnrichmentFailed when it has none to give."""
    name = step.name
    if not 200 <= status < 300:
        raise EnrichmentFailed(f"step {name!r}: the endpoint answered HTTP {status}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EnrichmentFailed(f"step {name!r}: the answer is not JSON") from None
    if step.kind == "graphql":
        if not isinstance(document, dict):
            raise EnrichmentFailed(f"step {name!r}: the answer is not a GraphQL response")
        errors = document.get("errors")
        if errors:
            first = errors[0].get("message") if isinstance(errors[0], dict) else errors[0]
            raise EnrichmentFailed(f"step {name!r}: GraphQL errors: {str(first)[:300]}")
        document = document.get("data")
    added = {}
    for path, target in step.mapping.items():
        value = document_value(document, path.split("."))
        if value is MISSING:
            raise EnrichmentFailed(f"step {name!r}: the answer has no value at {path!r}")
        added[target] = value
    return added
