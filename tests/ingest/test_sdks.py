"""The official Segment and RudderStack Python SDKs, pointed at Clarion, work unchanged.

Each SDK talks to a real Clarion server on loopback through a small relay of ours that
records what went over the wire and can lose a response (it forwards the request, so
Clarion stores the batch, but answers the SDK 503). The SDKs post batches from their own
threads with `requests`, so they run on a worker thread here, within a deadline.

What the SDKs do, read from their source (segment-analytics-python 2.4, rudder-sdk-python 2.1):
- both post `{"batch": [...], "sentAt": ...}` to `/v1/batch` with the write key as the Basic
  auth user name, gzip-compressed when asked (RudderStack compresses by default);
- both make `max_retries + 1` attempts in all when a batch fails with a retryable error
  (Segment: 408, 410, 429, 460 and 5xx but 501 and 505; RudderStack: 429, 5xx and network
  errors), Segment retrying at once and then backing off 0.5 s, 1 s...; RudderStack waiting
  a random 0 to 1 s, then 0 to 2 s...;
- both give up at once on any other 4xx, 401 included, and hand `on_error` the APIError
  built from the problem's `code` and `message`;
- in `sync_mode` neither retries: the call itself raises.
"""

from __future__ import annotations

import asyncio
import base64
import gzip as gzip_module
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import rudderstack.analytics
import rudderstack.analytics.request
import segment.analytics
import segment.analytics.request

from tests.conftest import Tenant
from tests.support import LiveServer

T = TypeVar("T")

# Longest a test waits for an SDK to deliver its queue and stop; well above what it needs.
DEADLINE_S = 10.0
AT = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)  # whole milliseconds, as Segment sends
CONTEXT: dict[str, Any] = {
    "ip": "203.0.113.7",
    "locale": "en-GB",
    "app": {"name": "Shop", "version": "3.1.0"},
}
IDENTIFY_TRAITS: dict[str, Any] = {"email": "zoe@example.com", "name": "Zoë", "plan": "pro"}
ORDER: dict[str, Any] = {"order_id": "o-17", "total": 42.5, "items": ["A1", "B2"], "gift": False}
GROUP_TRAITS: dict[str, Any] = {"name": "Acme", "employees": 120}

Message = dict[str, Any]
ErrorReport = tuple[Exception, list[Message]]


# The SDKs


class AnalyticsClient(Protocol):
    """What these tests use of `segment.analytics.Client` and `rudderstack.analytics.Client`.

    Each call answers `(queued, message)`, the message as the SDK will send it.
    """

    consumers: list[Any] | None

    def identify(self, **fields: Any) -> tuple[bool, Message]: ...
    def track(self, **fields: Any) -> tuple[bool, Message]: ...
    def page(self, **fields: Any) -> tuple[bool, Message]: ...
    def screen(self, **fields: Any) -> tuple[bool, Message]: ...
    def group(self, **fields: Any) -> tuple[bool, Message]: ...
    def alias(self, **fields: Any) -> tuple[bool, Message]: ...
    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class Sdk:
    """One official SDK and what it adds to the messages it sends."""

    name: str
    client_class: Callable[..., AnalyticsClient]
    version: str
    api_error: type[Exception]  # what it raises, or hands on_error, for an HTTP error
    identify_traits_in_context: bool  # RudderStack sends identify traits as context.traits
    extra: dict[str, Any]  # top-level fields outside the Segment spec it adds to every message

    @property
    def library(self) -> dict[str, str]:
        """The `context.library` it stamps on every message."""
        return {"name": "analytics-python", "version": self.version}

    def client(
        self,
        write_key: str,
        host: str,
        errors: list[ErrorReport],
        *,
        gzip: bool = False,
        sync_mode: bool = False,
        max_retries: int = 2,
    ) -> AnalyticsClient:
        """A client instance of its own (never the module-level singleton)."""

        def on_error(error: Exception, batch: list[Message]) -> None:
            errors.append((error, batch))

        return self.client_class(
            write_key=write_key,
            host=host,
            gzip=gzip,
            sync_mode=sync_mode,
            max_retries=max_retries,
            on_error=on_error,
            upload_interval=0.1,
            timeout=5,
        )


SEGMENT = Sdk(
    name="segment",
    client_class=segment.analytics.Client,
    version=segment.analytics.VERSION,
    api_error=segment.analytics.request.APIError,
    identify_traits_in_context=False,
    extra={},
)
RUDDERSTACK = Sdk(
    name="rudderstack",
    client_class=rudderstack.analytics.Client,
    version=rudderstack.analytics.VERSION,
    api_error=rudderstack.analytics.request.APIError,
    identify_traits_in_context=True,
    extra={"channel": "server"},
)
SDKS = [SEGMENT, RUDDERSTACK]
SDK_IDS = [sdk.name for sdk in SDKS]


async def deliver(analytics: AnalyticsClient, calls: Callable[[AnalyticsClient], T]) -> T:
    """Make the calls on a worker thread, then flush and stop the SDK, within the deadline."""

    def run() -> T:
        try:
            return calls(analytics)
        finally:
            if analytics.consumers is not None:  # None in sync mode: nothing queued
                analytics.shutdown()  # flush the queue, then stop the consumer thread

    return await asyncio.wait_for(asyncio.to_thread(run), timeout=DEADLINE_S)


def send_every_call(analytics: AnalyticsClient) -> dict[str, Message]:
    """One call of each type, at AT; the messages as the SDK sent them, by type."""
    sent: dict[str, Message] = {}
    common: dict[str, Any] = {"timestamp": AT}
    _, sent["identify"] = analytics.identify(
        user_id="u-1", traits=dict(IDENTIFY_TRAITS), context=dict(CONTEXT), **common
    )
    _, sent["track"] = analytics.track(
        user_id="u-1",
        event="Order Completed",
        properties=dict(ORDER),
        context=dict(CONTEXT),
        integrations={"Mailchimp": False},
        **common,
    )
    _, sent["page"] = analytics.page(
        anonymous_id="anon-1",
        category="Docs",
        name="Pricing",
        properties={"path": "/pricing", "referrer": "https://example.com/"},
        context=dict(CONTEXT),
        **common,
    )
    _, sent["screen"] = analytics.screen(
        user_id="u-1",
        category="Shop",
        name="Cart",
        properties={"items": 2},
        context=dict(CONTEXT),
        **common,
    )
    _, sent["group"] = analytics.group(
        user_id="u-1", group_id="acme", traits=dict(GROUP_TRAITS), context=dict(CONTEXT), **common
    )
    _, sent["alias"] = analytics.alias(
        previous_id="anon-1", user_id="u-1", context=dict(CONTEXT), **common
    )
    return sent


# What Clarion must store for each call of send_every_call (besides ids, context and times).
EXPECTED: dict[str, dict[str, Any]] = {
    "identify": {"user_id": "u-1", "anonymous_id": None, "name": None, "properties": None},
    "track": {
        "user_id": "u-1",
        "anonymous_id": None,
        "name": "Order Completed",
        "properties": ORDER,
        "traits": None,
        "integrations": {"Mailchimp": False},
    },
    "page": {
        "user_id": None,
        "anonymous_id": "anon-1",
        "name": "Pricing",
        "properties": {"path": "/pricing", "referrer": "https://example.com/"},
        "traits": None,
    },
    "screen": {"user_id": "u-1", "name": "Cart", "properties": {"items": 2}, "traits": None},
    "group": {
        "user_id": "u-1",
        "anonymous_id": None,
        "group_id": "acme",
        "name": None,
        "traits": GROUP_TRAITS,
        "properties": None,
    },
    "alias": {"user_id": "u-1", "previous_id": "anon-1", "name": None, "traits": None},
}
CATEGORIES = {"page": "Docs", "screen": "Shop"}


# A recording, fault-injecting relay between the SDK and Clarion

# Hop-by-hop and framing headers: http.client sets its own.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}
)


@dataclass(frozen=True)
class Exchange:
    """One request the relay forwarded: what the SDK sent, what Clarion and the SDK got back."""

    path: str
    headers: dict[str, str]  # as the SDK sent them, names in lower case
    gzipped: bool  # the body on the wire was a gzip stream
    body: dict[str, Any]  # the JSON body, decompressed
    upstream_status: int
    upstream_body: dict[str, Any]  # Clarion's JSON answer
    answered_status: int  # what the SDK was told

    @property
    def message_ids(self) -> list[str]:
        """The messageIds of the batch, in order."""
        return [message["messageId"] for message in self.body["batch"]]


class FaultProxy:
    """An HTTP relay on loopback to `upstream` that records every exchange.

    The first `lose_responses` requests are still forwarded (so Clarion acts on them) but
    the SDK is answered 503, as when a response is lost on the way back.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None and parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self.lose_responses = 0
        self._server = _RelayServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def exchanges(self) -> list[Exchange]:
        """Every exchange so far, in the order the relay answered them."""
        with self._lock:
            return list(self._exchanges)

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        """Forward the handler's request upstream, record it, then answer the SDK."""
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        headers = {
            name.lower(): value
            for name, value in handler.headers.items()
            if name.lower() not in _NOT_FORWARDED
        }
        upstream = http.client.HTTPConnection(*self._upstream, timeout=DEADLINE_S)
        try:
            upstream.request(handler.command, handler.path, body=raw, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
            answer_headers = {
                name: value
                for name, value in response.getheaders()
                if name.lower() in ("content-type", "www-authenticate")
            }
        finally:
            upstream.close()
        gzipped = raw[:2] == b"\x1f\x8b"
        with self._lock:
            lose = self.lose_responses > 0
            self.lose_responses -= int(lose)
            status = 503 if lose else response.status
            # Recorded before answering: once the SDK has its answer, the test may look.
            self._exchanges.append(
                Exchange(
                    path=handler.path,
                    headers=headers,
                    gzipped=gzipped,
                    body=json.loads(gzip_module.decompress(raw) if gzipped else raw),
                    upstream_status=response.status,
                    upstream_body=json.loads(answer),
                    answered_status=status,
                )
            )
        if lose:
            answer, answer_headers = (
                b"injected fault: response lost",
                {"Content-Type": "text/plain"},
            )
        handler.send_response(status)
        for name, value in answer_headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)


class _RelayHandler(BaseHTTPRequestHandler):
    server: _RelayServer

    def do_POST(self) -> None:
        self.server.proxy.relay(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.proxy = proxy


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[FaultProxy]:
    """A relay to the live Clarion server, stopped after the test."""
    with FaultProxy(live_server.url) as relay:
        yield relay


# Helpers


async def events_of(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    """Every event of the tenant's workspace, newest first."""
    response = await client.get("/api/v1/events", params={"limit": 1000}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def basic(write_key: str) -> str:
    """The Authorization header both SDKs send."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_wire(exchange: Exchange, *, write_key: str, gzip: bool) -> None:
    """The SDK posted a batch to /v1/batch, authenticated, compressed as configured."""
    assert exchange.path == "/v1/batch"
    assert exchange.headers["authorization"] == basic(write_key)
    assert exchange.headers["content-type"] == "application/json"
    assert exchange.headers.get("content-encoding") == ("gzip" if gzip else None)
    assert exchange.gzipped is gzip
    assert exchange.body["sentAt"]


def assert_stored_as_sent(
    events: list[dict[str, Any]], sent: dict[str, Message], *, sdk: Sdk, tenant: Tenant
) -> None:
    """Each call is stored exactly once, with what the SDK sent."""
    by_id = {event["message_id"]: event for event in events}
    assert len(events) == len(by_id) == len(sent)
    assert set(by_id) == {message["messageId"] for message in sent.values()}
    for kind, message in sent.items():
        event = by_id[message["messageId"]]
        assert event["type"] == kind
        assert event["source_id"] == str(tenant.source_id)
        for field, value in EXPECTED[kind].items():
            assert event[field] == value, (kind, field, event)
        context = {**CONTEXT, "library": sdk.library}
        if kind == "identify":
            # RudderStack's traits stay in context as sent and are taken up as the traits.
            if sdk.identify_traits_in_context:
                context["traits"] = IDENTIFY_TRAITS
            assert event["traits"] == IDENTIFY_TRAITS
        assert event["context"] == context, kind
        extra = {**sdk.extra, **({"category": CATEGORIES[kind]} if kind in CATEGORIES else {})}
        assert event["extra"] == (extra or None), kind
        assert _at(event["original_timestamp"]) == AT
        # Clock skew is corrected with sentAt, so only the network delay is added to AT.
        assert AT <= _at(event["timestamp"]) < AT + timedelta(seconds=DEADLINE_S)
        assert event["sent_at"] is not None


# 1. Every call type, gzip on and off, batched and synchronous


@pytest.mark.parametrize("sync_mode", [False, True], ids=["batched", "sync"])
@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("sdk", SDKS, ids=SDK_IDS)
async def test_every_call_the_sdk_makes_is_stored_once_as_sent(
    client: httpx.AsyncClient,
    tenant: Tenant,
    proxy: FaultProxy,
    sdk: Sdk,
    gzip: bool,
    sync_mode: bool,
) -> None:
    errors: list[ErrorReport] = []
    analytics = sdk.client(tenant.write_key, proxy.url, errors, gzip=gzip, sync_mode=sync_mode)

    sent = await deliver(analytics, send_every_call)

    assert errors == []
    exchanges = proxy.exchanges
    assert exchanges, "the SDK sent nothing"
    if sync_mode:
        assert len(exchanges) == len(sent)  # one request per call
    for exchange in exchanges:
        assert_wire(exchange, write_key=tenant.write_key, gzip=gzip)
        assert exchange.upstream_status == exchange.answered_status == 200
        assert exchange.upstream_body == {
            "success": True,
            "accepted": len(exchange.message_ids),
            "duplicates": 0,
            "rejected": [],
        }
    # Each message went over the wire exactly once: nothing was retried.
    on_the_wire = [message_id for exchange in exchanges for message_id in exchange.message_ids]
    assert sorted(on_the_wire) == sorted(message["messageId"] for message in sent.values())
    assert_stored_as_sent(await events_of(client, tenant), sent, sdk=sdk, tenant=tenant)


# 2. A lost response is retried, and the retry stores nothing twice


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("sdk", SDKS, ids=SDK_IDS)
async def test_a_lost_response_is_retried_and_every_message_is_stored_once(
    client: httpx.AsyncClient, tenant: Tenant, proxy: FaultProxy, sdk: Sdk, gzip: bool
) -> None:
    proxy.lose_responses = 1
    errors: list[ErrorReport] = []
    analytics = sdk.client(tenant.write_key, proxy.url, errors, gzip=gzip, max_retries=2)

    sent = await deliver(analytics, send_every_call)

    assert errors == []  # the retry succeeded, so the SDK reports nothing
    lost, retry, *later = proxy.exchanges
    # Clarion stored the first batch, but the SDK was told 503...
    assert lost.upstream_status == 200
    assert lost.upstream_body["accepted"] == len(lost.message_ids) > 0
    assert lost.answered_status == 503
    # ...so it sent the same batch again at once (one consumer thread: nothing in between)...
    assert retry.message_ids == lost.message_ids
    if sdk is SEGMENT:
        assert retry.headers["x-retry-count"] == "1"
    # ...which Clarion recognised as already stored.
    assert retry.upstream_status == retry.answered_status == 200
    assert retry.upstream_body == {
        "success": True,
        "accepted": 0,
        "duplicates": len(lost.message_ids),
        "rejected": [],
    }
    for exchange in (lost, retry, *later):
        assert_wire(exchange, write_key=tenant.write_key, gzip=gzip)
    for exchange in later:  # the rest of the calls, if the SDK split them into more batches
        assert exchange.answered_status == 200
        assert exchange.upstream_body["duplicates"] == 0
    first_tries = [message_id for exchange in (lost, *later) for message_id in exchange.message_ids]
    assert sorted(first_tries) == sorted(message["messageId"] for message in sent.values())
    assert_stored_as_sent(await events_of(client, tenant), sent, sdk=sdk, tenant=tenant)


# 3. A bad write key: one 401, read by the SDK, never retried, nothing stored


@pytest.mark.parametrize("key", ["unknown", "admin"], ids=["unknown-key", "admin-key"])
@pytest.mark.parametrize("sdk", SDKS, ids=SDK_IDS)
async def test_a_bad_write_key_gets_one_401_the_sdk_does_not_retry(
    client: httpx.AsyncClient, tenant: Tenant, proxy: FaultProxy, sdk: Sdk, key: str
) -> None:
    write_key = tenant.admin_key if key == "admin" else "wk_this_key_does_not_exist"
    errors: list[ErrorReport] = []
    # Retries allowed, so only the SDK's reading of 401 as fatal keeps it to one attempt.
    analytics = sdk.client(write_key, proxy.url, errors, gzip=True, max_retries=3)

    def track(sdk_client: AnalyticsClient) -> Message:
        _, message = sdk_client.track(user_id="u-1", event="Signed Up", timestamp=AT)
        return message

    message = await deliver(analytics, track)

    [exchange] = proxy.exchanges
    assert_wire(exchange, write_key=write_key, gzip=True)
    assert exchange.upstream_status == exchange.answered_status == 401
    problem = exchange.upstream_body
    assert problem["code"] == "unauthorized" and problem["message"]
    [(error, batch)] = errors  # reported once, with what the problem says
    assert isinstance(error, sdk.api_error)
    assert getattr(error, "status", None) == 401
    assert getattr(error, "code", None) == problem["code"]
    assert getattr(error, "message", None) == problem["message"]
    assert [item["messageId"] for item in batch] == [message["messageId"]]
    assert await events_of(client, tenant) == []


@pytest.mark.parametrize("sdk", SDKS, ids=SDK_IDS)
async def test_in_sync_mode_a_bad_write_key_raises_the_401_problem(
    client: httpx.AsyncClient, tenant: Tenant, proxy: FaultProxy, sdk: Sdk
) -> None:
    errors: list[ErrorReport] = []
    analytics = sdk.client("wk_this_key_does_not_exist", proxy.url, errors, sync_mode=True)

    def track(sdk_client: AnalyticsClient) -> Message:
        _, message = sdk_client.track(user_id="u-1", event="Signed Up", timestamp=AT)
        return message

    with pytest.raises(sdk.api_error, match=r"unauthorized") as raised:
        await deliver(analytics, track)

    [exchange] = proxy.exchanges
    assert exchange.upstream_status == exchange.answered_status == 401
    assert getattr(raised.value, "status", None) == 401
    assert getattr(raised.value, "message", None) == exchange.upstream_body["message"]
    assert errors == []  # sync mode raises instead of calling on_error
    assert await events_of(client, tenant) == []
