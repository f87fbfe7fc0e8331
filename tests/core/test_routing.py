"""Admin API bodies are read strictly (`core.routing`): NaN, infinities, numbers past a
double's range and integers past 64 bits are refused as malformed JSON (422 naming the body,
with line and column) before a route sees them, so nothing is stored; they were stored as
null or as rounded floats. Ordinary bodies, and the numbers at the edges, still pass."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

import clarion
from clarion.core.documents import MAX_JSON_DEPTH
from clarion.core.routing import StrictJSONRoute, loads
from clarion.ingest.api import tracking
from tests.conftest import Tenant, problem

# What JSON columns cannot keep, as clients write it.
UNKEEPABLE = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    str(2**64),
    str(2**63),
    str(-(2**63) - 1),
    str(10**30),
]
# What they can, at the edges: integers of 64 bits, the largest double, and long runs of
# digits in strings and fractions.
KEEPABLE = {
    "top": 2**63 - 1,
    "bottom": -(2**63),
    "largest": 1.7976931348623157e308,
    "digits": "123456789012345678901234567890",
    "fraction": 0.12345678901234567890123,
}
NUMBER = "__number__"
DEEP = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH  # too deep inside any document
JSON = {"Content-Type": "application/json"}


def with_number(document: dict[str, Any], numeral: str) -> bytes:
    """`document` as JSON text, `numeral` written where it holds NUMBER."""
    return json.dumps(document).replace(f'"{NUMBER}"', numeral).encode()


# Admin routes that keep part of their body as free JSON (each stored null or a rounded
# float before): the path to create, a body holding NUMBER there, the list of what is stored.
FREE_JSON_ROUTES = [
    (
        "/api/v1/tracking-plans",
        {
            "name": "Plan",
            "events": [
                {"name": "Order", "json_schema": {"type": "object", "maximum": NUMBER}},
            ],
        },
        "/api/v1/tracking-plans",
    ),
    (
        "/api/v1/journeys",
        {"name": "Cart", "graph": {"nodes": [{"id": "start", "type": "trigger", "x": NUMBER}]}},
        "/api/v1/journeys",
    ),
    (
        "/api/v1/templates",
        {"name": "Hook", "channel": "webhook", "content": {"body": {"n": NUMBER}}},
        "/api/v1/templates",
    ),
    (
        "/api/v1/segments",
        {
            "name": "Old",
            "rule": {"type": "trait", "trait": "age", "operator": "lt", "value": NUMBER},
        },
        "/api/v1/segments",
    ),
]


@pytest.mark.parametrize("numeral", UNKEEPABLE)
def test_the_reader_refuses_what_json_columns_cannot_keep_and_says_where(numeral: str) -> None:
    text = '{\n  "a": [1, "' + "9" * 25 + '"],\n  "b": ' + numeral + "\n}"
    with pytest.raises(json.JSONDecodeError) as caught:
        loads(text.encode())
    assert caught.value.lineno == 3
    assert caught.value.colno in (8, 9)  # the numeral, or past a sign with no digit


def test_the_reader_keeps_what_json_columns_can() -> None:
    assert loads(json.dumps(KEEPABLE).encode()) == KEEPABLE
    assert loads(b'["\\"' + b"9" * 25 + b'", 0.' + b"9" * 25 + b"]") == ['"' + "9" * 25, 1.0]
    assert loads(b"1e-400") == 0.0  # an underflow reads as zero, which columns keep
    assert loads(b"\xef\xbb\xbf{}") == {}  # a UTF-8 byte order mark, as Python's reader took


def test_the_reader_refuses_a_nul_character_and_keeps_the_text_of_one() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        loads('{"é": 1,\n "a": "x\\u0000"}'.encode())
    assert (caught.value.lineno, caught.value.colno) == (2, 9)
    assert "NUL" in caught.value.msg
    assert loads(b'{"path": "C:\\\\u0000"}') == {"path": "C:\\u0000"}


def test_the_reader_refuses_nesting_past_the_limit_and_says_where() -> None:
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads(deepest.encode()) is not None
    brackets_in_text = '{"a": "' + "[{" * MAX_JSON_DEPTH + '", "b": [[1]]}'
    assert loads(brackets_in_text.encode())["b"] == [[1]]
    with pytest.raises(json.JSONDecodeError) as caught:
        loads(('{"é": "[",\n "a": ' + deepest + "}").encode())
    assert (caught.value.lineno, caught.value.colno) == (2, 7 + MAX_JSON_DEPTH - 1)
    assert "nested more than" in caught.value.msg


@pytest.mark.parametrize(("path", "document", "listing"), FREE_JSON_ROUTES)
async def test_unkeepable_numbers_in_free_json_are_refused_naming_the_body(
    client: httpx.AsyncClient, tenant: Tenant, path: str, document: dict[str, Any], listing: str
) -> None:
    headers = {**tenant.admin, **JSON}
    for numeral in [*UNKEEPABLE, '"\\u0000"', DEEP]:
        response = await client.post(path, content=with_number(document, numeral), headers=headers)
        body = problem(response, 422, "body")
        assert body["detail"].startswith("The body is not valid JSON: "), body
        assert "line 1, column " in body["detail"], body
    listed = await client.get(listing, headers=tenant.admin)
    assert listed.json()["items"] == []
    # The same body with a number a column keeps is taken.
    made = await client.post(path, content=with_number(document, "42"), headers=headers)
    assert made.status_code == 201, made.text


async def test_ordinary_bodies_pass_with_the_numbers_at_the_edges(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    graph = {"nodes": [{"id": "start", "type": "trigger", "x": KEEPABLE}]}
    made = await client.post(
        "/api/v1/journeys", json={"name": "Edges", "graph": graph}, headers=tenant.admin
    )
    assert made.status_code == 201, made.text
    read = await client.get(f"/api/v1/journeys/{made.json()['id']}", headers=tenant.admin)
    assert read.json()["graph"]["nodes"][0]["x"] == KEEPABLE


@pytest.mark.parametrize("path", ["/api/v1/journeys", "/api/v1/campaigns"])
async def test_malformed_json_is_a_422_naming_the_body_line_and_column(
    client: httpx.AsyncClient, tenant: Tenant, path: str
) -> None:
    raw = b'{\n  "name": "x",\n  "graph": '
    response = await client.post(path, content=raw, headers={**tenant.admin, **JSON})
    body = problem(response, 422, "body")
    assert body["code"] == "invalid-input"
    assert body["detail"].startswith("The body is not valid JSON: "), body
    assert "at line 3, column 12" in body["detail"], body


def _routers() -> dict[str, list[APIRouter]]:
    """Every module's routers, by module, among the modules named like `*api*.py`."""
    found: dict[str, list[APIRouter]] = {}
    package = Path(clarion.__file__).parent
    for path in sorted(package.rglob("*api*.py")):
        name = ".".join(("clarion", *path.relative_to(package).with_suffix("").parts))
        values = vars(importlib.import_module(name)).values()
        if routers := [value for value in values if isinstance(value, APIRouter)]:
            found[name] = routers
    return found


def test_every_router_reads_bodies_strictly() -> None:
    routers = _routers()
    assert len(routers) >= 13  # the walk found the routers' modules
    lenient = {
        name
        for name, found in routers.items()
        for router in found
        if router.route_class is not StrictJSONRoute
    }
    assert lenient == set()


def test_routes_without_a_body_model_or_query_keep_fastapis_own_handler() -> None:
    # The tracking API reads its bytes itself (msgspec): strictness must cost it nothing.
    for route in tracking.routes:
        assert isinstance(route, StrictJSONRoute)
        assert route.body_field is None
        assert "strict_handler" not in route.get_route_handler().__qualname__


# Query parameters taking free text, as listings and look-ups read them.
TEXT_QUERIES = [
    ("/api/v1/events", "name"),
    ("/api/v1/events", "user_id"),
    ("/api/v1/profiles", "email"),
    ("/api/v1/profiles", "user_id"),
    ("/api/v1/jobs", "kind"),
    ("/api/v1/messages", "origin_id"),
    ("/api/v1/tracking-plans/violations", "event"),
]


@pytest.mark.parametrize(("path", "name"), TEXT_QUERIES)
async def test_a_nul_in_a_query_parameter_is_refused_naming_it(
    client: httpx.AsyncClient, tenant: Tenant, path: str, name: str
) -> None:
    # PostgreSQL refuses the NUL ("invalid byte sequence"): it was a 500 there.
    response = await client.get(f"{path}?{name}=a%00b@shop.example&limit=5", headers=tenant.admin)
    body = problem(response, 422, name)
    assert "NUL" in str(body["errors"])
    fine = await client.get(f"{path}?{name}=a%2500b@shop.example&limit=5", headers=tenant.admin)
    assert fine.status_code == 200, fine.text  # "%00" as text, not a NUL


async def test_a_nul_in_an_inbox_user_id_is_refused_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/inbox/v1/messages?inbox_key=ibx_1_x&user_id=a%00&user_hash=x")
    problem(response, 422, "user_id")


async def test_the_open_pixel_is_still_the_gif_whatever_its_query(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/t/o/not-a-token.gif?x=%00")
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
