"""Profile import (CSV, streamed in chunks) and export (CSV, JSON Lines), through the API.

Imports: good files, each kind of bad row reported by line with nothing of it written,
whole-file problems (4xx naming the field, nothing written), gzip, chunked streaming of a
2,000-row file, re-imports updating rather than duplicating. Exports: both formats, keyset
pages, and the round trip export -> import into another workspace giving the same traits.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.errors import InvalidInput, PayloadTooLarge
from clarion.profiles import exports, imports, transfer
from tests.conftest import Tenant, problem
from tests.profiles.conftest import Send, identify, track
from tests.support import LiveServer

URL = "/api/v1/profiles/imports"
CSV_TYPE = {"Content-Type": "text/csv"}


async def post_csv(
    client: httpx.AsyncClient,
    tenant: Tenant,
    body: str | bytes,
    *,
    headers: dict[str, str] | None = None,
    reader: bool = False,
) -> httpx.Response:
    """POST a CSV body as the tenant's admin (or read-only key)."""
    content = body.encode() if isinstance(body, str) else body
    auth = tenant.reader if reader else tenant.admin
    return await client.post(URL, content=content, headers={**auth, **CSV_TYPE, **(headers or {})})


async def imported(client: httpx.AsyncClient, tenant: Tenant, body: str | bytes) -> dict[str, Any]:
    """The answer of a successful import."""
    response = await post_csv(client, tenant, body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def all_profiles(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    """Every canonical profile of the workspace, through the paged list."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/profiles", params=params, headers=tenant.admin)).json()
        found += page["items"]
        if not (cursor := page["next_cursor"]):
            return found


async def by_user(client: httpx.AsyncClient, tenant: Tenant, user_id: str) -> dict[str, Any] | None:
    """The profile of a user id, or None."""
    response = await client.get(
        "/api/v1/profiles", params={"user_id": user_id}, headers=tenant.admin
    )
    items = response.json()["items"]
    return items[0] if items else None


async def history(client: httpx.AsyncClient, tenant: Tenant, profile_id: str) -> list[Any]:
    """(key, new value, source) of each trait change of a profile, oldest first."""
    url = f"/api/v1/profiles/{profile_id}/traits/history"
    items = (await client.get(url, headers=tenant.admin)).json()["items"]
    return [(c["key"], c["new"], c["source"]) for c in reversed(items)]


async def test_a_good_file(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = (
        "user_id,Email,phone,name,age:int,score:float,vip:bool,birthday:date,seen:datetime,"
        "tags:json\r\n"
        "u1, Ann@Example.com ,+44 20 7946 0018,Ann,41,9.5,yes,1984-02-29,"
        '2026-01-02T03:04:05+01:00,"[""a"",1]"\r\n'
        ",bob@example.com,,Bob,,,false,,,\r\n"
        "\r\n"  # blank lines are skipped
        ',,555 0100 200,"Cy, the ""third""",7,,,,,{}\r\n'
    )
    result = await imported(client, tenant, body)
    assert result == {"rows": 3, "created": 3, "updated": 0, "rejected": 0, "errors": []}

    ann = await by_user(client, tenant, "u1")
    assert ann is not None
    assert ann["traits"] == {
        "email": "Ann@Example.com",
        "phone": "+44 20 7946 0018",
        "name": "Ann",
        "age": 41,
        "score": 9.5,
        "vip": True,
        "birthday": "1984-02-29",
        "seen": "2026-01-02T02:04:05+00:00",
        "tags": ["a", 1],
    }
    assert {(i["kind"], i["value"]) for i in ann["identities"]} == {
        ("user_id", "u1"),
        ("email", "ann@example.com"),
        ("phone", "+442079460018"),
    }
    changes = await history(client, tenant, ann["id"])
    assert {source for _, _, source in changes} == {"import"}
    assert ("age", 41, "import") in changes
    bob = (
        await client.get(
            "/api/v1/profiles", params={"email": "BOB@example.com"}, headers=tenant.admin
        )
    ).json()["items"][0]
    assert bob["traits"] == {"email": "bob@example.com", "name": "Bob", "vip": False}
    cy = (
        await client.get("/api/v1/profiles", params={"phone": "5550100200"}, headers=tenant.admin)
    ).json()["items"][0]
    assert cy["traits"]["name"] == 'Cy, the "third"' and cy["traits"]["tags"] == {}


async def test_semicolons_and_a_byte_order_mark(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = "\ufeffemail;city\nann@example.com;Zürich\n".encode()
    assert (await imported(client, tenant, body))["created"] == 1
    [profile] = await all_profiles(client, tenant)
    assert profile["traits"] == {"email": "ann@example.com", "city": "Zürich"}


async def test_each_bad_row_is_reported_by_line_and_nothing_of_it_written(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    lines = [
        b"user_id,email,phone,age:int,notes",  # 1
        b"good-1,,,1,fine",  # 2
        b",,,2,no identity",  # 3
        b"bad-email,not-an-email,,3,x",  # 4
        b"bad-phone,,12,4,x",  # 5
        b"bad-age,,,four,x",  # 6
        b"bad-count,,,5",  # 7
        b'good-2,,,6,"two\nlines"',  # 8-9
        b"bad-text,,,7,caf\xe9",  # 10: Latin-1, not UTF-8
        b'bad-quote,,,8,"a"b',  # 11
        b"bad-nul,,,9,a\x00b",  # 12
        b"x" * 256 + b",,,10,too long user id",  # 13
        b"good-3,,,11,last good",  # 14
        b'bad-open,,,12,"never closed',  # 15
    ]
    result = await imported(client, tenant, b"\n".join(lines) + b"\n")
    assert (result["rows"], result["created"], result["updated"], result["rejected"]) == (
        13,
        3,
        0,
        10,
    )
    assert [(e["line"], e["field"]) for e in result["errors"]] == [
        (3, "user_id"),
        (4, "email"),
        (5, "phone"),
        (6, "age:int"),
        (7, "row"),
        (10, "row"),
        (11, "row"),
        (12, "notes"),
        (13, "user_id"),
        (15, "row"),
    ]
    messages = {e["line"]: e["message"] for e in result["errors"]}
    assert "not a whole number" in messages[6]
    assert "4 fields where the header has 5" in messages[7]
    assert "UTF-8" in messages[10]
    assert "never closed" in messages[15]
    # Only the good rows exist; the bad ones left neither a profile nor a trait change.
    profiles = await all_profiles(client, tenant)
    users = sorted(i["value"] for p in profiles for i in p["identities"] if i["kind"] == "user_id")
    assert users == ["good-1", "good-2", "good-3"]
    assert len(profiles) == 3
    good_2 = await by_user(client, tenant, "good-2")
    assert good_2 is not None and good_2["traits"] == {"age": 6, "notes": "two\nlines"}
    for profile in profiles:
        values = [v for _, v, _ in await history(client, tenant, profile["id"])]
        assert len(values) == 2 and not {3, 4, 5, 7, 8, 9, 10, 12} & set(values)


async def test_values_one_database_could_not_store_are_rejected_on_both(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = (
        "user_id,doc:json,n:int\n"
        'u1,"""\\ud800""",1\n'  # a lone surrogate
        'u2,"""a\\u0000b""",1\n'  # NUL, which PostgreSQL's JSON refuses
        'u3,"{""k"": 18446744073709551616}",1\n'
        "u4,1,9223372036854775808\n"
        'u5,"{""k"": [1, ""ok""]}",-9223372036854775808\n'
    )
    result = await imported(client, tenant, body)
    assert [(e["line"], e["field"], e["message"]) for e in result["errors"]] == [
        (2, "doc:json", "not valid Unicode text"),
        (3, "doc:json", "contains a NUL character"),
        (4, "doc:json", "a number beyond 64 bits"),
        (5, "n:int", "a number beyond 64 bits"),
    ]
    [profile] = await all_profiles(client, tenant)
    assert profile["traits"] == {"doc": {"k": [1, "ok"]}, "n": -(2**63)}


async def test_typed_cells_out_of_range_or_not_plain_digits_are_bad_cells(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Each is the row's error, never a 500 nor a value stored as something else (an
    infinite number as null, Arabic-Indic digits as a number)."""
    past_year_9999 = "beyond the range of dates (years 1 to 9999 in UTC)"
    too_deep = f"nested more than {transfer.MAX_JSON_DEPTH} levels deep"
    cells = [
        ("seen:datetime", "9999-12-31T23:59:59-14:00", past_year_9999),
        ("seen:datetime", "0001-01-01T00:00:00+14:00", past_year_9999),
        ("seen:datetime", "99999-01-01T00:00:00", "not an ISO 8601 date and time"),
        ("doc:json", "1e400", "not a finite number"),
        ("doc:json", '{"k": [-1e400]}', "not a finite number"),
        ("doc:json", "NaN", "not JSON"),
        ("doc:json", "-Infinity", "not JSON"),
        ("doc:json", "[" * 300 + "]" * 300, too_deep),  # orjson writes 254 levels at most
        ("doc:json", "[" * 5000 + "]" * 5000, too_deep),  # json reads fewer than 1000
        ("doc:json", "1" * 5000, "a number beyond 64 bits"),
        ("n:int", "\u0663", "not a whole number"),  # ARABIC-INDIC DIGIT THREE
        ("n:int", "1_000", "not a whole number"),
        ("n:int", "1" * 5000, "a number beyond 64 bits"),
        ("n:int", "-9223372036854775809", "a number beyond 64 bits"),
        ("x:float", "\u0663.5", "not a number"),
        ("x:float", "1_000.5", "not a number"),
        ("x:float", "1e400", "not a finite number"),
        ("x:float", "nan", "not a number"),
    ]
    columns = ["seen:datetime", "doc:json", "n:int", "x:float"]
    lines = ["user_id," + ",".join(columns)]
    for number, (column, cell, _) in enumerate(cells):
        row = ["" if c != column else '"' + cell.replace('"', '""') + '"' for c in columns]
        lines.append(f"bad-{number}," + ",".join(row))
    lines.append("good,9999-12-31T09:59:59-14:00,[1e-400],+0042,-1.5E3")
    result = await imported(client, tenant, "\n".join(lines) + "\n")
    assert [(e["line"], e["field"], e["message"]) for e in result["errors"]] == [
        (line, column, message) for line, (column, _, message) in enumerate(cells, start=2)
    ]
    assert (result["created"], result["rejected"]) == (1, len(cells))
    [profile] = await all_profiles(client, tenant)
    assert profile["traits"] == {
        "seen": "9999-12-31T23:59:59+00:00",
        "doc": [0.0],
        "n": 42,
        "x": -1500.0,
    }


async def test_an_email_with_a_line_break_is_not_an_email_address(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = 'email,name\n"ann@example.com\r\nBcc: all@example.com",Ann\nbea@example.com,Bea\n'
    result = await imported(client, tenant, body)
    assert [(e["line"], e["field"], e["message"]) for e in result["errors"]] == [
        (2, "email", "not an email address")
    ]
    [profile] = await all_profiles(client, tenant)
    assert profile["traits"] == {"email": "bea@example.com", "name": "Bea"}
    lookup = {"email": "ann@example.com\nBcc: all@example.com"}
    problem(await client.get("/api/v1/profiles", params=lookup, headers=tenant.admin), 400, "email")


async def test_the_first_errors_are_reported_and_all_counted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = "email\n" + "nope\n" * 250
    result = await imported(client, tenant, body)
    assert (result["rows"], result["rejected"]) == (250, 250)
    assert len(result["errors"]) == imports.MAX_REPORTED_ERRORS
    assert result["errors"][0]["line"] == 2 and result["errors"][-1]["line"] == 101


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b"", {}, 400, "body"),
        (b"\n\n", {}, 400, "body"),
        (b"name,age:int\nAnn,3\n", {}, 400, "header"),
        (b"email,age:integer\na@b.co,3\n", {}, 400, "age:integer"),
        (b"email,name,name\na@b.co,x,y\n", {}, 400, "name"),
        (b"email,email:str\na@b.co,x\n", {}, 400, "email:str"),
        (b"email,:int\na@b.co,3\n", {}, 400, ":int"),
        (b"email,ci\x00ty\na@b.co,Oslo\n", {}, 400, "header"),  # each row refused before
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", {}, 400, "header"),
        (b"email\na@b.co\n", {"Content-Type": "application/json"}, 415, "Content-Type"),
        (b"email\na@b.co\n", {"Content-Type": "text/csv; charset=latin-1"}, 415, "Content-Type"),
        (b"email\na@b.co\n", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
        (b"email\na@b.co\n", {"Content-Encoding": "gzip"}, 400, "body"),
        (gzip.compress(b"email\na@b.co\n")[:-12], {"Content-Encoding": "gzip"}, 400, "body"),
        (b"email\na@b.co\n", {"Content-Length": str(imports.MAX_IMPORT_BYTES + 1)}, 413, "body"),
    ],
    ids=[
        "empty",
        "blank",
        "no-identity-column",
        "unknown-type",
        "duplicate-column",
        "typed-email",
        "nameless-column",
        "nul-in-a-column-name",
        "binary",
        "json-media-type",
        "latin-1",
        "brotli",
        "not-gzip",
        "truncated-gzip",
        "too-large",
    ],
)
async def test_whole_file_problems_write_nothing(
    client: httpx.AsyncClient,
    tenant: Tenant,
    body: bytes,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    problem(await post_csv(client, tenant, body, headers=headers), status, field)
    assert await all_profiles(client, tenant) == []


async def test_gzip_bodies(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = "user_id,plan\n" + "".join(f"u{i},gold\n" for i in range(50))
    marked = await post_csv(
        client, tenant, gzip.compress(body.encode()), headers={"Content-Encoding": "gzip"}
    )
    assert marked.status_code == 200 and marked.json()["created"] == 50
    # A gzip body sent without Content-Encoding (curl --data-binary @file.csv.gz) is read too.
    again = body.replace("gold", "silver")
    unmarked = await imported(client, tenant, gzip.compress(again.encode()))
    assert (unmarked["created"], unmarked["updated"]) == (0, 50)
    profile = await by_user(client, tenant, "u7")
    assert profile is not None and profile["traits"] == {"plan": "silver"}


async def test_reimport_updates_rather_than_duplicates(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = "user_id,email,plan,visits:int\nu1,ann@example.com,free,1\nu2,,free,1\n"
    assert (await imported(client, tenant, first))["created"] == 2
    second = (
        "email,user_id,plan,visits:int\n"
        "ANN@example.com,u1,pro,2\n"  # the same person, found by both identities
        ",u2,free,1\n"  # unchanged
        "cy@example.com,u3,free,1\n"
    )
    result = await imported(client, tenant, second)
    assert (result["rows"], result["created"], result["updated"]) == (3, 1, 2)
    assert len(await all_profiles(client, tenant)) == 3
    ann = await by_user(client, tenant, "u1")
    assert ann is not None and ann["traits"]["plan"] == "pro" and ann["traits"]["visits"] == 2
    keys = [key for key, _, _ in await history(client, tenant, ann["id"])]
    assert keys.count("plan") == 2 and keys.count("visits") == 2
    u2 = await by_user(client, tenant, "u2")
    assert u2 is not None
    assert [k for k, _, _ in await history(client, tenant, u2["id"])] == ["plan", "visits"]


async def test_read_only_key_may_export_but_not_import(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    problem(await post_csv(client, tenant, "email\na@b.co\n", reader=True), 403)
    assert await all_profiles(client, tenant) == []
    problem(await client.post(URL, content=b"email\na@b.co\n", headers=CSV_TYPE), 401)
    exported = await client.get("/api/v1/profiles/export", headers=tenant.reader)
    assert exported.status_code == 200
    problem(await client.get("/api/v1/profiles/export", params={"format": "xml"}), 401)
    bad = await client.get(
        "/api/v1/profiles/export", params={"format": "xml"}, headers=tenant.reader
    )
    problem(bad, 422, "format")


# Streaming in chunks, at the service.


async def test_a_large_file_is_read_and_written_chunk_by_chunk(
    database: Database, tenant: Tenant
) -> None:
    rows = 2_000  # per-row upserts make bigger files slow to test, not different
    lines = [b"user_id,email,n:int\n"] + [
        f"user-{i},u{i}@example.com,{i}\n".encode() for i in range(rows)
    ]
    lines[1234] = b"user-bad,not-an-email,1\n"
    total = sum(len(line) for line in lines)
    sent = 0
    at_chunk: list[tuple[int, int, int]] = []

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for line in lines:  # a line at a time, as a slow client would send it
            sent += len(line)
            yield line

    async def on_chunk(result: imports.ImportResult) -> None:
        at_chunk.append((result.rows, result.created, sent))

    result = await imports.import_csv(
        database,
        workspace_id=tenant.id,
        body=body(),
        clock=SystemClock(),
        chunk_rows=200,
        on_chunk=on_chunk,
    )
    assert (result.rows, result.created, result.rejected) == (rows, rows - 1, 1)
    assert [(e.line, e.field) for e in result.errors] == [(1235, "email")]
    # Ten transactions of 200 rows, each committed before the rest of the body was read:
    # what is held at once is one chunk, not the file.
    assert result.chunks == 10
    assert [created for _, created, _ in at_chunk] == [200 * k for k in range(1, 10)] + [1999]
    for index, (read, _, consumed) in enumerate(at_chunk[:-1]):
        assert read - (index + 1) * 200 <= 1  # the rejected row is read but not written
        assert consumed < total * (index + 1.2) / 10
    async with database.read_session() as session:
        kinds = await exports.trait_columns(session, workspace_id=tenant.id)
    assert kinds == {"n": "int"}


async def test_a_stream_over_the_limit_keeps_the_chunks_before_it(
    database: Database, tenant: Tenant
) -> None:
    body = b"user_id\n" + b"".join(f"user-{i}\n".encode() for i in range(400))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    with pytest.raises(PayloadTooLarge) as raised:
        await imports.import_csv(
            database,
            workspace_id=tenant.id,
            body=chunks(),
            clock=SystemClock(),
            max_bytes=2_000,
            chunk_rows=50,
        )
    assert "created 200" in raised.value.detail
    # A gzip body is measured once inflated too, so a small bomb is refused.
    bomb = gzip.compress(b"email\n" + b"\n" * 100_000)

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    with pytest.raises(PayloadTooLarge):
        await imports.import_csv(
            database,
            workspace_id=tenant.id,
            body=one(bomb),
            clock=SystemClock(),
            max_bytes=50_000,
        )
    with pytest.raises(InvalidInput) as not_gzip:
        await imports.import_csv(
            database,
            workspace_id=tenant.id,
            body=one(b"email\n"),
            clock=SystemClock(),
            gzipped=True,
        )
    assert not_gzip.value.errors[0].field == "body"


# Export.


async def export(
    client: httpx.AsyncClient, tenant: Tenant, format: str
) -> tuple[httpx.Response, str]:
    response = await client.get(
        "/api/v1/profiles/export", params={"format": format}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    return response, response.content.decode("utf-8")


def csv_rows(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")  # spreadsheets read UTF-8 with it
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


async def test_export_formats(
    client: httpx.AsyncClient, send: Send, tenant: Tenant, other_tenant: Tenant
) -> None:
    await send(
        identify("u1", anonymous_id="a1", email="ann@example.com", name="Ann", age=41),
        track("Order Completed", user_id="u1", minute=2, revenue=12.5, currency="EUR"),
        track("Viewed", anonymous_id="visitor", minute=3),
    )
    await imported(client, tenant, "user_id,plan\nu1,gold\nu2,free\n")
    await imported(client, other_tenant, "user_id,secret\nother,yes\n")

    response, text = await export(client, tenant, "csv")
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and '.csv"' in disposition
    rows = csv_rows(text)
    assert list(rows[0])[:3] == ["user_id", "email", "phone"]
    assert [c for c in rows[0] if not c.startswith("clarion_")][3:] == ["age:int", "name", "plan"]
    assert "secret" not in rows[0]
    by_user = {row["user_id"]: row for row in rows}
    assert set(by_user) == {"u1", "u2", ""}  # "" is the anonymous visitor
    ann = by_user["u1"]
    assert (ann["email"], ann["name"], ann["age:int"], ann["plan"]) == (
        "ann@example.com",
        "Ann",
        "41",
        "gold",
    )
    assert json.loads(ann["clarion_event_counts"]) == {"Order Completed": 1}
    assert ann["clarion_orders"] == "1"
    assert json.loads(ann["clarion_money"])[0]["lifetime_value"] == 1250
    assert "anonymous_id:a1" in json.loads(ann["clarion_identities"])
    assert by_user["u2"]["name"] == "" and by_user["u2"]["clarion_orders"] == "0"

    response, text = await export(client, tenant, "jsonl")
    assert response.headers["content-type"].startswith("application/jsonl")
    assert '.jsonl"' in response.headers["content-disposition"]
    profiles = [json.loads(line) for line in text.splitlines()]
    assert len(profiles) == 3 and text.endswith("\n")
    [ann_json] = [p for p in profiles if p["traits"].get("name") == "Ann"]
    assert ann_json["id"] == ann["clarion_id"]
    assert ann_json["computed"]["event_counts"] == {"Order Completed": 1}
    assert ann_json["traits"] == {
        "email": "ann@example.com",
        "name": "Ann",
        "age": 41,
        "plan": "gold",
    }
    listed = {p["id"] for p in await all_profiles(client, tenant)}
    assert {p["id"] for p in profiles} == listed


async def test_export_pages_through_every_profile(
    client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> None:
    await imported(client, tenant, "user_id\n" + "".join(f"u{i}\n" for i in range(7)))
    for format in exports.ExportFormat:
        pieces = [
            piece
            async for piece in exports.stream_profiles(
                database, workspace_id=tenant.id, format=format, page_size=2
            )
        ]
        text = "".join(pieces)
        if format is exports.ExportFormat.CSV:
            users = [row["user_id"] for row in csv_rows(text)]
            assert len(pieces) == 1 + 4  # the header, then one piece per page of two
        else:
            users = [json.loads(line)["identities"][0]["value"] for line in text.splitlines()]
            assert len(pieces) == 4
        assert sorted(users) == [f"u{i}" for i in range(7)]


async def test_export_then_import_elsewhere_gives_the_same_traits(
    client: httpx.AsyncClient, send: Send, tenant: Tenant, other_tenant: Tenant
) -> None:
    await send(
        identify("ev-1", email="Eve@Example.com", address={"city": "Oslo", "zip": "0150"}),
        identify("ev-2", phone="+47 22 00 00 00", tags=["a", "b"], vip=True, score=3),
        track("Viewed", anonymous_id="only-anonymous"),
        # Written so that no spreadsheet runs them (a leading '), read back as they were.
        identify("=ev-3", motto="=1+2", quoted="'@x", drift=-5.5e-07, plain="'as is"),
    )
    body = (
        "user_id,email,name,score:json,ratio:float,vip:bool,note:json,odd:key:str,"
        "user_id:str,clarion_x:str,blank:json,Email:str\r\n"
        'u1,ann@example.com,Ann,2.5,0.1,false,null,a:b,trait-uid,kept,"""""",second\r\n'
        'u2,,"Bob\nBobson","{""k"":[1,2]}",3.0,true,,,,,,\r\n'
        'u3,,  spaced  ,,,,"""text""",,,,,\r\n'
    )
    assert (await imported(client, tenant, body))["created"] == 3
    source = {
        p["id"]: p for p in await all_profiles(client, tenant) if p["traits"] or p["identities"]
    }

    _, text = await export(client, tenant, "csv")
    result = await imported(client, other_tenant, text.encode())
    # The visitor known by an anonymous id only cannot be imported: nothing to find it by.
    assert (result["rows"], result["created"], result["rejected"]) == (7, 6, 1)
    assert result["errors"][0]["field"] == "user_id"
    copies = await all_profiles(client, other_tenant)
    assert len(copies) == 6
    [guarded] = [row for row in csv_rows(text) if row["user_id"] == "'=ev-3"]
    assert (guarded["motto"], guarded["quoted"], guarded["plain"]) == ("'=1+2", "''@x", "'as is")

    def key(profile: dict[str, Any]) -> tuple[str, ...]:
        return tuple(
            sorted(
                f"{i['kind']}:{i['value']}"
                for i in profile["identities"]
                if i["kind"] != "anonymous_id"
            )
        )

    originals = {key(p): p["traits"] for p in source.values() if key(p)}
    assert {key(p): p["traits"] for p in copies} == originals
    ann = originals[("email:ann@example.com", "user_id:u1")]
    assert ann["score"] == 2.5 and ann["note"] is None and ann["blank"] == ""
    assert ann["odd:key"] == "a:b" and ann["user_id"] == "trait-uid" and ann["Email"] == "second"
    # The export of the copy is the same file, but for ids and dates.
    _, again = await export(client, other_tenant, "csv")

    def portable(text: str) -> list[dict[str, str]]:
        return sorted(
            (
                {
                    k: v
                    for k, v in row.items()
                    if k in ("clarion_money",) or not k.startswith("clarion_")
                }
                for row in csv_rows(text)
                if row["user_id"] or row["email"] or row["phone"]
            ),
            key=lambda row: (row["user_id"], row["email"], row["phone"]),
        )

    assert portable(again) == portable(text)


async def test_over_real_http_chunked_gzip_upload_and_streamed_download(
    live_server: LiveServer, tenant: Tenant
) -> None:
    text = "user_id,n:int\n" + "".join(f"u{i},{i}\n" for i in range(300))
    packed = gzip.compress(text.encode())

    async def upload() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for start in range(0, len(packed), 512):
            yield packed[start : start + 512]

    headers = {**tenant.admin, **CSV_TYPE, "Content-Encoding": "gzip"}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        response = await http.post(URL, content=upload(), headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["created"] == 300
        async with http.stream(
            "GET", "/api/v1/profiles/export", params={"format": "csv"}, headers=tenant.reader
        ) as download:
            assert download.status_code == 200
            assert download.headers["content-disposition"].startswith("attachment;")
            pieces = [piece async for piece in download.aiter_bytes()]
    rows = csv_rows(b"".join(pieces).decode())
    assert sorted(int(row["n:int"]) for row in rows) == list(range(300))
