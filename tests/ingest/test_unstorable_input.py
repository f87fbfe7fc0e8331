"""Tracking input the rest of Clarion could not keep or give back as sent: refused with a 400
that says what is wrong and names the field; and gzip streams of several members."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import orjson
import pytest

from clarion.ingest.messages import MAX_DEPTH
from clarion.ingest.service import unstorable
from clarion.profiles.transfer import MAX_JSON_DEPTH
from tests.conftest import Tenant, problem

JSON = {"content-type": "application/json"}
GOOD = b'{"type": "track", "userId": "u1", "event": "Good", "messageId": "good"}'


async def events_of(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/events", params={"limit": 1000}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def nested(levels: int) -> bytes:
    """A JSON object `levels` deep, itself the first."""
    return b'{"a": ' * (levels - 1) + b'{"a": 1' + b"}" * levels


# 1. A lone surrogate: said so, with where, not msgspec's "Input data was truncated"


async def test_a_lone_surrogate_is_named_with_its_line_and_column(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = b'{"userId": "u1", "event": "E",\n "properties": {"x": "ab\\ud800"}}'
    response = await client.post("/v1/track", content=body, auth=tenant.writer, headers=JSON)

    detail = problem(response, 400, "properties")["detail"]
    assert "truncated" not in detail
    assert "lone surrogate (\\ud800) at line 2 column 25" in detail, detail
    assert "properties.x" in detail


@pytest.mark.parametrize("escape", ["\\udc00", "\\ud800\\u0041"])
async def test_a_batch_with_a_lone_surrogate_names_message_and_field(
    client: httpx.AsyncClient, tenant: Tenant, escape: str
) -> None:
    bad = b'{"type": "identify", "userId": "u2", "traits": {"n": "' + escape.encode() + b'"}}'
    body = b'{"batch": [' + GOOD + b", " + bad + b"]}"
    response = await client.post("/v1/batch", content=body, auth=tenant.writer, headers=JSON)

    error = problem(response, 400, "batch.1.traits")["errors"][0]
    assert error["message"].startswith(f"not valid JSON text: a lone surrogate ({escape[:6]})")
    assert await events_of(client, tenant) == []


async def test_bytes_that_are_not_utf8_are_named_with_their_place(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    bad = b'{"type": "track", "userId": "u1", "event": "E", "properties": {"x": "\xff"}}'
    body = b'{"batch": [' + GOOD + b", " + bad + b"]}"
    response = await client.post("/v1/batch", content=body, auth=tenant.writer, headers=JSON)

    assert response.status_code == 200, response.text
    [rejected] = response.json()["rejected"]
    assert rejected["index"] == 1
    assert rejected["message"] == "not UTF-8 text: byte 0xff at line 1 column 70"


# 2. Integers past 64 bits: refused like numbers past a double's range, naming the field


async def test_integers_past_64_bits_are_refused_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    wide = [
        (b'{"type": "track", "userId": "u1", "event": "E", '
         b'"properties": {"x": 123456789012345678901234567890}}', "properties"),
        (b'{"type": "identify", "userId": "u1", "traits": {"n": [-9223372036854775809]}}',
         "traits"),
        (b'{"type": "track", "userId": "u1", "event": "E", '
         b'"context": {"x": {"y": 9223372036854775808}}}', "context"),
        (b'{"type": "page", "userId": "u1", "category": 18446744073709551616}', "category"),
    ]  # fmt: skip
    body = b'{"batch": [' + b", ".join([GOOD, *(raw for raw, _ in wide)]) + b"]}"
    response = await client.post("/v1/batch", content=body, auth=tenant.writer, headers=JSON)

    assert response.status_code == 200, response.text
    rejected = response.json()["rejected"]
    assert [(e["index"], e["field"]) for e in rejected] == [
        (index, field) for index, (_, field) in enumerate(wide, 1)
    ]
    assert all("beyond 64 bits" in e["message"] for e in rejected)
    assert [e["message_id"] for e in await events_of(client, tenant)] == ["good"]


@pytest.mark.parametrize(
    ("shared", "said"),
    [
        (b"123456789012345678901234567890", "beyond 64 bits"),
        (nested(MAX_DEPTH), "nested more than"),
        (b"1e400", "beyond a double's range"),
        (b'"a\\u0000b"', "NUL character"),
    ],
    ids=["wide", "deep", "infinite", "nul"],
)
async def test_a_batch_context_that_could_not_be_kept_is_refused_naming_it(
    client: httpx.AsyncClient, tenant: Tenant, shared: bytes, said: str
) -> None:
    """It was a 500 (orjson refused to write it over a message's own context; PostgreSQL
    refused the NUL); a number past a double's range was said to be no object."""
    message = b'{"type": "track", "userId": "u1", "event": "E", "context": {"ip": "::1"}}'
    body = b'{"batch": [' + message + b'], "context": {"x": ' + shared + b"}}"
    response = await client.post("/v1/batch", content=body, auth=tenant.writer, headers=JSON)

    assert said in problem(response, 400, "context")["errors"][0]["message"]
    assert await events_of(client, tenant) == []


async def test_64_bit_integers_and_long_digit_runs_elsewhere_are_kept_exactly(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    properties = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "text": "12345678901234567890123",
    }
    body = {"userId": 123456789012345678901234567890, "event": "E", "properties": properties}
    # Python's writer: orjson refuses integers past 64 bits.
    content = json.dumps(body).encode()
    response = await client.post("/v1/track", content=content, auth=tenant.writer, headers=JSON)

    assert response.status_code == 200, response.text
    [event] = await events_of(client, tenant)
    assert event["properties"] == properties
    assert event["user_id"] == "123456789012345678901234567890"  # ids are kept as text


# 3. Blank ids: refused (Segment takes an empty id as absent; blank is a client's bug)


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
@pytest.mark.parametrize("blank", [" ", "   ", "\t\n", "\u00a0"], ids=["1", "3", "tab", "nbsp"])
async def test_a_blank_id_is_refused_naming_it(
    client: httpx.AsyncClient, tenant: Tenant, field: str, blank: str
) -> None:
    body = {"userId": "u1", field: blank, "traits": {"plan": "pro"}}
    response = await client.post("/v1/identify", json=body, auth=tenant.writer)

    assert "blank" in problem(response, 400, field)["detail"]
    assert await events_of(client, tenant) == []


async def test_a_blank_group_id_is_refused_and_an_empty_user_id_is_absent(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [
        {"type": "group", "userId": "u1", "groupId": "  "},
        {"type": "track", "userId": "", "anonymousId": "a1", "event": "Kept"},
    ]
    response = await client.post("/v1/batch", json={"batch": batch}, auth=tenant.writer)

    assert response.status_code == 200, response.text
    assert [(e["index"], e["field"]) for e in response.json()["rejected"]] == [(0, "groupId")]
    [event] = await events_of(client, tenant)
    assert (event["user_id"], event["anonymous_id"]) == (None, "a1")


# 4. gzip: several members are one stream; bytes after it that start none are refused


async def test_concatenated_gzip_members_are_one_body(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    text = b'{"batch": [' + GOOD + b"]}"
    body = b"".join(gzip.compress(text[i : i + 7]) for i in range(0, len(text), 7))
    response = await client.post(
        "/v1/batch", content=body, auth=tenant.writer, headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 200, response.text
    assert [e["message_id"] for e in await events_of(client, tenant)] == ["good"]


@pytest.mark.parametrize(
    ("case", "trailer", "status"),
    [
        ("garbage", b"garbage", 400),
        ("zeros", b"\x00" * 8, 400),
        ("a truncated member", gzip.compress(b" ")[:-4], 400),
        ("members past the limit", gzip.compress(b" " * 400 * 1024), 413),
    ],
    ids=["garbage", "zeros", "truncated member", "members past the limit"],
)
async def test_bytes_after_the_gzip_stream_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, case: str, trailer: bytes, status: int
) -> None:
    body = gzip.compress(b'{"batch": [' + GOOD + b"]}" + b" " * 200 * 1024) + trailer
    response = await client.post(
        "/v1/batch", content=body, auth=tenant.writer, headers={"Content-Encoding": "gzip"}
    )

    problem(response, status, "body")
    assert await events_of(client, tenant) == []


# 5. Nesting: at most as deep as profile import reads back


def test_ingestion_and_profile_import_agree_on_depth() -> None:
    assert MAX_DEPTH == MAX_JSON_DEPTH


async def test_documents_nested_past_the_import_limit_are_refused_naming_them(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    deep = nested(MAX_DEPTH + 1)
    bad = [
        (b'{"type": "identify", "userId": "u1", "traits": ' + deep + b"}", "traits"),
        (b'{"type": "track", "userId": "u1", "event": "E", "properties": ' + deep + b"}",
         "properties"),
        (b'{"type": "track", "userId": "u1", "event": "E", "context": ' + deep + b"}", "context"),
        (b'{"type": "group", "userId": "u1", "groupId": "g", "traits": {"l": [' + deep + b"]}}",
         "traits"),
    ]  # fmt: skip
    body = b'{"batch": [' + b", ".join([GOOD, *(raw for raw, _ in bad)]) + b"]}"
    response = await client.post("/v1/batch", content=body, auth=tenant.writer, headers=JSON)

    assert response.status_code == 200, response.text
    rejected = response.json()["rejected"]
    assert [(e["index"], e["field"]) for e in rejected] == [
        (index, field) for index, (_, field) in enumerate(bad, 1)
    ]
    assert all(e["message"] == "nested more than 128 levels deep" for e in rejected)
    assert [e["message_id"] for e in await events_of(client, tenant)] == ["good"]


async def test_documents_nested_to_the_limit_are_kept(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    deep = nested(MAX_DEPTH)
    body = b'{"userId": "u1", "traits": ' + deep + b"}"
    response = await client.post("/v1/identify", content=body, auth=tenant.writer, headers=JSON)

    assert response.status_code == 200, response.text
    [event] = await events_of(client, tenant)
    assert event["traits"] == orjson.loads(deep)


def test_a_document_deeper_than_the_stack_is_said_too_deep_not_raised() -> None:
    # The message's first read may pass a depth that a deeper call stack then cannot read
    # again: a RecursionError there was a 500.
    assert unstorable(b"[" * 5_000 + b"]" * 5_000) == f"nested more than {MAX_DEPTH} levels deep"
