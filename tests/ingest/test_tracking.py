"""The Segment Tracking API: every call type, auth, gzip, limits, de-duplication, timestamps."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from clarion.core.clock import FrozenClock
from tests.conftest import Tenant, problem

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def frozen(app: FastAPI) -> Iterator[FrozenClock]:
    """The application's clock, frozen at NOW for this test."""
    clock, app.state.clock = app.state.clock, FrozenClock(NOW)
    yield app.state.clock
    app.state.clock = clock


async def events_of(
    client: httpx.AsyncClient, tenant: Tenant, **query: Any
) -> list[dict[str, Any]]:
    """Every event of the tenant's workspace, newest first."""
    response = await client.get(
        "/api/v1/events", params={"limit": 1000, **query}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


CALLS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "identify",
        {"userId": "u1", "traits": {"email": "ada@example.com"}},
        {"traits": {"email": "ada@example.com"}},
    ),
    (
        "track",
        {"userId": "u1", "event": "Product Viewed", "properties": {"sku": "A1"}},
        {"name": "Product Viewed", "properties": {"sku": "A1"}},
    ),
    (
        "page",
        {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}, "category": "Docs"},
        {"name": "Home", "extra": {"category": "Docs"}},
    ),
    ("screen", {"userId": "u1", "name": "Cart"}, {"name": "Cart"}),
    (
        "group",
        {"userId": "u1", "groupId": "acme", "traits": {"plan": "pro"}},
        {"group_id": "acme", "traits": {"plan": "pro"}},
    ),
    ("alias", {"userId": "u1", "previousId": "a1"}, {"previous_id": "a1"}),
]


@pytest.mark.parametrize(("kind", "body", "stored"), CALLS, ids=[c[0] for c in CALLS])
async def test_each_call_is_stored_and_acknowledged(
    client: httpx.AsyncClient,
    tenant: Tenant,
    kind: str,
    body: dict[str, Any],
    stored: dict[str, Any],
) -> None:
    response = await client.post(
        f"/v1/{kind}", json={**body, "messageId": f"m-{kind}"}, auth=tenant.writer
    )

    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    [event] = await events_of(client, tenant)
    assert event["type"] == kind
    assert event["message_id"] == f"m-{kind}"
    assert event["source_id"] == str(tenant.source_id)
    for field, value in stored.items():
        assert event[field] == value


async def test_write_key_in_body_authenticates(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"userId": "u1", "event": "Signed Up", "writeKey": tenant.write_key}
    response = await client.post("/v1/track", json=body)

    assert response.status_code == 200, response.text
    [event] = await events_of(client, tenant)
    assert event["extra"] is None  # the key is never stored with the event


async def test_gzip_body_is_accepted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = gzip.compress(
        orjson.dumps({"batch": [{"type": "track", "userId": "u1", "event": "Zipped"}]})
    )
    response = await client.post(
        "/v1/batch", content=body, auth=tenant.writer, headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 200, response.text
    assert [e["name"] for e in await events_of(client, tenant)] == ["Zipped"]


async def test_numeric_ids_are_kept_as_strings(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/v1/identify", json={"userId": 42}, auth=tenant.writer)

    assert response.status_code == 200, response.text
    [event] = await events_of(client, tenant)
    assert event["user_id"] == "42"


async def test_context_and_integrations_are_kept_and_batch_level_ones_apply_to_all(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {
        "context": {"library": {"name": "analytics.js"}, "ip": "10.0.0.1"},
        "integrations": {"All": False},
        "batch": [
            {
                "type": "track",
                "userId": "u1",
                "event": "A",
                "messageId": "a",
                "context": {"ip": "10.0.0.2"},
            },
            {
                "type": "track",
                "userId": "u1",
                "event": "B",
                "messageId": "b",
                "integrations": {"Mailchimp": True},
            },
        ],
    }
    response = await client.post("/v1/batch", json=body, auth=tenant.writer)

    assert response.status_code == 200, response.text
    events = {e["message_id"]: e for e in await events_of(client, tenant)}
    assert events["a"]["context"] == {"library": {"name": "analytics.js"}, "ip": "10.0.0.2"}
    assert events["a"]["integrations"] == {"All": False}
    assert events["b"]["context"] == {"library": {"name": "analytics.js"}, "ip": "10.0.0.1"}
    assert events["b"]["integrations"] == {"All": False, "Mailchimp": True}


# De-duplication


async def test_a_retried_batch_stores_nothing_twice(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u1", "event": f"E{i}", "messageId": f"m{i}"}
            for i in range(5)
        ]
    }

    first = await client.post("/v1/batch", json=batch, auth=tenant.writer)
    retry = await client.post("/v1/batch", json=batch, auth=tenant.writer)

    assert first.json() == {"success": True, "accepted": 5, "duplicates": 0, "rejected": []}
    assert retry.json() == {"success": True, "accepted": 0, "duplicates": 5, "rejected": []}
    assert len(await events_of(client, tenant)) == 5


async def test_a_message_id_repeated_inside_one_batch_is_stored_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    message = {"type": "track", "userId": "u1", "event": "Twice", "messageId": "same"}
    response = await client.post(
        "/v1/batch", json={"batch": [message, message]}, auth=tenant.writer
    )

    assert response.json()["accepted"] == 1
    assert response.json()["duplicates"] == 1
    assert len(await events_of(client, tenant)) == 1


async def test_message_ids_are_per_workspace(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    body = {"userId": "u1", "event": "Shared id", "messageId": "shared"}
    await client.post("/v1/track", json=body, auth=tenant.writer)
    await client.post("/v1/track", json=body, auth=other_tenant.writer)

    assert len(await events_of(client, tenant)) == 1
    assert len(await events_of(client, other_tenant)) == 1


async def test_messages_without_message_id_get_one(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for _ in range(2):
        await client.post("/v1/track", json={"userId": "u1", "event": "No id"}, auth=tenant.writer)

    events = await events_of(client, tenant)
    assert len(events) == 2
    assert len({e["message_id"] for e in events}) == 2


# Timestamps


async def test_client_clock_skew_is_corrected_with_sent_at(
    client: httpx.AsyncClient, tenant: Tenant, frozen: FrozenClock
) -> None:
    # The device's clock runs 1 hour fast; the event happened 10 s before it was sent.
    device_now = NOW + timedelta(hours=1)
    body = {
        "userId": "u1",
        "event": "Skewed",
        "originalTimestamp": (device_now - timedelta(seconds=10)).isoformat(),
        "sentAt": device_now.isoformat(),
    }
    await client.post("/v1/track", json=body, auth=tenant.writer)

    [event] = await events_of(client, tenant)
    assert _at(event["received_at"]) == NOW
    assert _at(event["sent_at"]) == device_now
    assert _at(event["original_timestamp"]) == device_now - timedelta(seconds=10)
    assert _at(event["timestamp"]) == NOW - timedelta(seconds=10)


async def test_batch_sent_at_applies_to_its_messages(
    client: httpx.AsyncClient, tenant: Tenant, frozen: FrozenClock
) -> None:
    sent = NOW - timedelta(minutes=5)  # the client's clock is 5 minutes slow
    body = {
        "sentAt": sent.isoformat(),
        "batch": [
            {
                "type": "track",
                "userId": "u1",
                "event": "Old",
                "timestamp": (sent - timedelta(minutes=1)).isoformat(),
            }
        ],
    }
    await client.post("/v1/batch", json=body, auth=tenant.writer)

    [event] = await events_of(client, tenant)
    assert _at(event["original_timestamp"]) == sent - timedelta(minutes=1)
    assert _at(event["timestamp"]) == NOW - timedelta(minutes=1)


async def test_timestamp_without_sent_at_is_used_as_given(
    client: httpx.AsyncClient, tenant: Tenant, frozen: FrozenClock
) -> None:
    given = datetime(2024, 2, 29, 8, 30, tzinfo=UTC)
    await client.post(
        "/v1/track",
        json={"userId": "u1", "event": "Import", "timestamp": "2024-02-29T09:30:00+01:00"},
        auth=tenant.writer,
    )

    [event] = await events_of(client, tenant)
    assert _at(event["timestamp"]) == given
    assert _at(event["received_at"]) == NOW


async def test_no_client_time_means_received_at(
    client: httpx.AsyncClient, tenant: Tenant, frozen: FrozenClock
) -> None:
    await client.post("/v1/track", json={"userId": "u1", "event": "Now"}, auth=tenant.writer)

    [event] = await events_of(client, tenant)
    assert _at(event["timestamp"]) == NOW
    assert event["original_timestamp"] is None


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


# Partial batches


async def test_a_batch_stores_the_valid_and_reports_the_rest_by_index(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "Good"},
        {"type": "track", "userId": "u1"},
        {"type": "teleport", "userId": "u1"},
        {"type": "identify"},
        "not an object",
        {"type": "identify", "userId": "u1", "traits": ["not", "an", "object"]},
        {"type": "track", "userId": "u1", "event": "Big", "properties": {"blob": "x" * 33_000}},
        {"type": "group", "userId": "u1"},
        {"type": "alias", "userId": "u1"},
        {"type": "track", "userId": "u1", "event": "Bad time", "timestamp": "yesterday"},
    ]
    response = await client.post("/v1/batch", json={"batch": batch}, auth=tenant.writer)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    rejected = {r["index"]: r["field"] for r in body["rejected"]}
    assert rejected == {
        1: "event",
        2: "type",
        3: "userId",
        4: "",
        5: "traits",
        6: "",
        7: "groupId",
        8: "previousId",
        9: "timestamp",
    }
    assert all(r["message"] for r in body["rejected"])
    assert [e["name"] for e in await events_of(client, tenant)] == ["Good"]


# Bad input: a clear 4xx naming the problem, and nothing stored


BAD_SINGLE_CALLS: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", b'{"userId": "u1", "event": ', 400, "body"),
    ("not an object", b"[1, 2, 3]", 400, "body"),
    ("no user or anonymous id", b'{"event": "Orphan"}', 400, "userId"),
    ("no event name", b'{"userId": "u1"}', 400, "event"),
    ("event of the wrong type", b'{"userId": "u1", "event": 7}', 400, "event"),
    (
        "properties of the wrong type",
        b'{"userId": "u1", "event": "E", "properties": "x"}',
        400,
        "properties",
    ),
    ("context of the wrong type", b'{"userId": "u1", "event": "E", "context": []}', 400, "context"),
    ("userId of the wrong type", b'{"userId": true, "event": "E"}', 400, "userId"),
    ("bad timestamp", b'{"userId": "u1", "event": "E", "timestamp": "soon"}', 400, "timestamp"),
    (
        "oversized message",
        orjson.dumps({"userId": "u1", "event": "E", "properties": {"x": "y" * 33_000}}),
        413,
        "body",
    ),
]


@pytest.mark.parametrize(
    ("case", "raw", "status", "field"), BAD_SINGLE_CALLS, ids=[c[0] for c in BAD_SINGLE_CALLS]
)
async def test_bad_single_calls_get_a_problem_and_store_nothing(
    client: httpx.AsyncClient, tenant: Tenant, case: str, raw: bytes, status: int, field: str
) -> None:
    response = await client.post("/v1/track", content=raw, auth=tenant.writer)

    problem(response, status, field)
    assert await events_of(client, tenant) == []


BAD_BATCHES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    (
        "unknown type only",
        orjson.dumps({"batch": [{"type": "teleport", "userId": "u1"}]}),
        {},
        400,
        "type",
    ),
    ("batch missing", b'{"sentAt": "2026-01-01T00:00:00Z"}', {}, 400, "batch"),
    ("batch not a list", b'{"batch": {"type": "track"}}', {}, 400, "batch"),
    ("empty batch", b'{"batch": []}', {}, 400, "batch"),
    (
        "bad sentAt",
        orjson.dumps(
            {"sentAt": "later", "batch": [{"type": "track", "userId": "u", "event": "E"}]}
        ),
        {},
        400,
        "sentAt",
    ),
    (
        "context not an object",
        orjson.dumps({"context": 1, "batch": [{"type": "track", "userId": "u", "event": "E"}]}),
        {},
        400,
        "context",
    ),
    (
        "oversized body",
        orjson.dumps(
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "u",
                        "event": "E",
                        "properties": {"x": "y" * 30_000},
                    }
                ]
                * 18
            }
        ),
        {},
        413,
        "body",
    ),
    ("bad gzip stream", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "body"),
    (
        "truncated gzip stream",
        gzip.compress(b'{"batch": []}')[:-6],
        {"Content-Encoding": "gzip"},
        400,
        "body",
    ),
    (
        "gzip bomb",
        gzip.compress(b'{"batch": [' + b" " * 2_000_000 + b"]}"),
        {"Content-Encoding": "gzip"},
        413,
        "body",
    ),
    ("unsupported encoding", b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
]


@pytest.mark.parametrize(
    ("case", "raw", "headers", "status", "field"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES]
)
async def test_bad_batches_get_a_problem_and_store_nothing(
    client: httpx.AsyncClient,
    tenant: Tenant,
    case: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    response = await client.post("/v1/batch", content=raw, auth=tenant.writer, headers=headers)

    problem(response, status, field)
    assert await events_of(client, tenant) == []


async def test_every_message_of_an_all_invalid_batch_is_reported(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [{"type": "track", "userId": "u1"}, {"type": "identify"}]
    response = await client.post("/v1/batch", json={"batch": batch}, auth=tenant.writer)

    body = problem(response, 400)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "event"), (1, "userId")]


# Authentication


async def test_unknown_write_key_is_401(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/track", json={"userId": "u1", "event": "E"}, auth=("nope", "")
    )

    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Basic")
    assert await events_of(client, tenant) == []


async def test_unknown_write_key_is_refused_before_the_body_is_read(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/track", content=b"{not json", auth=("nope", ""))

    problem(response, 401)


async def test_missing_write_key_is_401(client: httpx.AsyncClient) -> None:
    problem(await client.post("/v1/track", json={"userId": "u1", "event": "E"}), 401)


async def test_malformed_basic_credentials_are_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/track", json={"userId": "u1", "event": "E"}, headers={"Authorization": "Basic %%%"}
    )
    problem(response, 401)


async def test_admin_key_cannot_send_events(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/track", json={"userId": "u1", "event": "E"}, auth=(tenant.admin_key, "")
    )

    problem(response, 401)
    assert await events_of(client, tenant) == []


async def test_revoked_write_key_is_401(client: httpx.AsyncClient, tenant: Tenant) -> None:
    keys = (await client.get("/api/v1/keys", headers=tenant.admin)).json()["items"]
    [write_key] = [k for k in keys if k["scope"] == "write"]
    revoked = await client.delete(f"/api/v1/keys/{write_key['id']}", headers=tenant.admin)
    assert revoked.status_code == 200

    response = await client.post(
        "/v1/track", json={"userId": "u1", "event": "E"}, auth=tenant.writer
    )

    body = problem(response, 401)
    assert "revoked" in body["detail"]
    assert await events_of(client, tenant) == []


async def test_basic_auth_header_matches_what_sdks_send(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = base64.b64encode(f"{tenant.write_key}:".encode()).decode()
    response = await client.post(
        "/v1/identify", json={"userId": "u1"}, headers={"Authorization": f"Basic {token}"}
    )
    assert response.status_code == 200


async def test_identify_traits_in_context_are_taken_up(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {
        "userId": "u1",
        "traits": {"plan": "pro"},
        "context": {"traits": {"email": "ada@example.com", "plan": "free"}},
    }
    await client.post("/v1/identify", json=body, auth=tenant.writer)

    [event] = await events_of(client, tenant)
    assert event["traits"] == {"email": "ada@example.com", "plan": "pro"}
    assert event["context"] == {"traits": {"email": "ada@example.com", "plan": "free"}}


async def test_nul_characters_are_refused_not_a_server_error(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    bad = {"type": "track", "userId": "u1", "event": "E", "properties": {"note": "a\u0000b"}}
    single = await client.post("/v1/track", json=bad, auth=tenant.writer)
    problem(single, 400, "body")

    good = {"type": "track", "userId": "u1", "event": "Fine"}
    batch = await client.post("/v1/batch", json={"batch": [good, bad]}, auth=tenant.writer)
    assert batch.status_code == 200
    assert batch.json()["rejected"][0]["index"] == 1
    assert [e["name"] for e in await events_of(client, tenant)] == ["Fine"]


async def test_a_literal_backslash_u0000_in_text_is_not_a_nul(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    text = "C:\\u0000\\files"  # a backslash followed by the letters u0000: ordinary text
    body = {"userId": "u1", "event": "Path Shown", "properties": {"path": text}}
    response = await client.post("/v1/track", json=body, auth=tenant.writer)

    assert response.status_code == 200, response.text
    [event] = await events_of(client, tenant)
    assert event["properties"] == {"path": text}


async def test_values_no_later_stage_could_handle_are_refused_by_index(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Each was once accepted (or a 500 that sank its batch) and then failed processing for
    ever, holding back its sender's later events, or broke the event log's API."""
    good = b'{"type": "track", "userId": "u1", "event": "Good", "messageId": "good"}'
    deep = b'{"a": ' * 1100 + b"1" + b"}" * 1100
    bad = [
        (b'{"type": "track", "userId": "u1", "event": "E", "properties": {"x": 1e400}}',
         "properties"),
        (b'{"type": "identify", "userId": "u1", "traits": {"n": -1E+999}}', "traits"),
        (b'{"type": "track", "userId": "u1", "event": "E", "context": {"x": 1' + b"0" * 400
         + b"}}", "context"),
        (b'{"type": "track", "userId": "u1", "event": "E", '
         b'"timestamp": "0001-01-01T00:00:00+01:00"}', "timestamp"),
        (b'{"type": "track", "userId": "u1", "event": "E", "timestamp": "9999-12-31T23:00:00Z"}',
         "timestamp"),
        (b'{"type": "track", "userId": "u1", "event": "E", '
         b'"timestamp": "2020-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"}', "sentAt"),
        (b'{"type": "identify", "userId": "u1", "traits": {"' + b"k" * 256 + b'": 1}}',
         "traits"),
        (b'{"type": "identify", "userId": "u1", "context": {"traits": {"' + b"k" * 256
         + b'": 1}}}', "context.traits"),
    ]  # fmt: skip
    body = b'{"batch": [' + b", ".join([good, *(raw for raw, _ in bad)]) + b"]}"
    response = await client.post(
        "/v1/batch", content=body, auth=tenant.writer, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    rejected = response.json()["rejected"]
    assert [(e["index"], e["field"]) for e in rejected] == [
        (index, field) for index, (_, field) in enumerate(bad, 1)
    ]
    assert [e["message_id"] for e in await events_of(client, tenant)] == ["good"]
    # A tiny number, a big exponent in a string, a long property name (not a trait): fine.
    fine = b'{"type": "track", "userId": "u1", "event": "Fine", "messageId": "fine", '
    fine += b'"properties": {"x": 1e-400, "code": "1e400", "' + b"k" * 256 + b'": 1}}'
    single = await client.post(
        "/v1/track", content=fine, auth=tenant.writer, headers={"content-type": "application/json"}
    )
    assert single.status_code == 200, single.text
    # Nesting past the reader's depth: a 400, not a 500 asking the SDK to retry for ever.
    nested = b'{"userId": "u1", "event": "E", "properties": ' + deep + b"}"
    response = await client.post(
        "/v1/track",
        content=nested,
        auth=tenant.writer,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    # The batch's own sentAt off the calendar: the whole batch is refused, naming it.
    shared = b'{"batch": [' + good + b'], "sentAt": "0001-01-01T00:00:00+01:00"}'
    response = await client.post(
        "/v1/batch",
        content=shared,
        auth=tenant.writer,
        headers={"content-type": "application/json"},
    )
    problem(response, 400, "sentAt")
    listed = await client.get(
        "/api/v1/events", params={"since": "0001-01-01T00:00:00+01:00"}, headers=tenant.admin
    )
    problem(listed, 422, "since")  # as any time it cannot read
