"""`clarion import orders`: order lines as Segment e-commerce events, on both databases.

`data/online_retail_slice.csv` holds 223 lines of the UCI Online Retail data set (Chen, D.
(2015), https://doi.org/10.24432/C5BW33, CC BY 4.0), unchanged: its first 200 lines, lines
without a customer, cancellations, an invoice whose lines come back after another invoice's
(542806), and a summer (BST) invoice.
"""

from __future__ import annotations

import gzip
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.errors import InvalidInput, NotFound
from clarion.core.jobs.models import Job
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from clarion.ingest.orders import OrdersResult, import_orders, open_orders
from tests.conftest import Tenant, run_cli

SLICE = Path(__file__).parent / "data" / "online_retail_slice.csv"
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
# What the slice holds: 223 lines, 4 without a customer; 22 customers, 28 orders, 4 refunds.
CUSTOMERS, ORDERS, REFUNDS = 22, 28, 4
EVENTS = CUSTOMERS + ORDERS + REFUNDS


async def _import(database: Database, tenant: Tenant, path: Path) -> OrdersResult:
    with open_orders(path) as text:
        return await import_orders(database, text, workspace_slug=tenant.slug, clock=SystemClock())


async def _events(database: Database, tenant: Tenant) -> list[Event]:
    async with database.read_session() as session:
        query = select(Event).where(Event.workspace_id == tenant.id).order_by(Event.id)
        return list((await session.scalars(query)).all())


async def _queued_event_ids(database: Database, tenant: Tenant) -> list[int]:
    async with database.read_session() as session:
        query = select(Job).where(Job.workspace_id == tenant.id, Job.kind == PROCESS_EVENTS)
        jobs = (await session.scalars(query)).all()
    return sorted(event_id for job in jobs for event_id in job.payload["event_ids"])


def _orders(events: list[Event], order_id: str) -> list[Event]:
    return [e for e in events if e.properties and e.properties["order_id"] == order_id]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_orders_refunds_and_customers_become_segment_events(
    database: Database, tenant: Tenant
) -> None:
    result = await _import(database, tenant, SLICE)
    assert (result.rows, result.no_customer, result.bad_lines) == (223, 4, 0)
    assert (result.customers, result.orders, result.refunds) == (CUSTOMERS, ORDERS, REFUNDS)
    assert (result.sent, result.stored, result.skipped_invoices, result.errors) == (
        EVENTS,
        EVENTS,
        0,
        [],
    )
    events = await _events(database, tenant)
    assert len(events) == EVENTS and {e.source_id for e in events} == {tenant.source_id}
    assert [e.type for e in events].count("identify") == CUSTOMERS

    [first] = _orders(events, "536365")
    assert (first.type, first.name, first.user_id) == ("track", "Order Completed", "17850")
    assert first.timestamp == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)  # GMT in winter
    assert first.properties is not None
    assert first.properties["revenue"] == 139.12 and first.properties["currency"] == "GBP"
    assert len(first.properties["products"]) == 7
    assert first.properties["products"][0] == {
        "product_id": "85123A",
        "sku": "85123A",
        "name": "WHITE HANGING HEART T-LIGHT HOLDER",
        "quantity": 6,
        "price": 2.55,
    }
    [identify] = [e for e in events if e.type == "identify" and e.user_id == "17850"]
    assert identify.id < first.id and identify.timestamp == first.timestamp
    assert identify.traits == {"country": "United Kingdom"}

    # A cancellation: its own event, order_id without the C, amounts positive.
    [refund] = _orders(events, "536379")
    assert (refund.name, refund.user_id) == ("Order Refunded", "14527")
    assert refund.properties == {
        "order_id": "536379",
        "revenue": 27.5,
        "currency": "GBP",
        "products": [
            {"product_id": "D", "sku": "D", "name": "Discount", "quantity": 1, "price": 27.5}
        ],
    }
    [summer] = _orders(events, "555162")
    assert summer.timestamp == datetime(2011, 6, 1, 9, 15, tzinfo=UTC)  # 10:15 BST
    [game] = [
        p
        for p in _orders(events, "536389")[0].properties["products"]  # type: ignore[index]
        if p["sku"] == "21791"
    ]
    assert game["name"] == "VINTAGE HEADS AND TAILS CARD GAME"  # the file's trailing space

    # 542806's lines come back after another invoice's: two events for one order.
    runs = _orders(events, "542806")
    assert [e.timestamp.minute for e in runs] == [19, 20]
    assert len({e.message_id for e in runs}) == 2
    assert [e.properties["revenue"] for e in runs if e.properties] == [31.8, 110.05]

    assert await _queued_event_ids(database, tenant) == [e.id for e in events]


async def test_importing_again_stores_nothing_twice(
    database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    packed = tmp_path / "orders.csv.bin"  # gzip is told by its bytes, not its name
    packed.write_bytes(gzip.compress(SLICE.read_bytes()))
    first = await _import(database, tenant, packed)
    again = await _import(database, tenant, SLICE)
    assert (first.stored, again.sent, again.stored) == (EVENTS, EVENTS, 0)
    events = await _events(database, tenant)
    assert len(events) == EVENTS
    assert await _queued_event_ids(database, tenant) == [e.id for e in events]


def _corrupt(lines: list[str], number: int, column: int, value: str) -> None:
    cells = lines[number - 1].split(",")
    cells[column] = value
    lines[number - 1] = ",".join(cells)


async def test_a_bad_line_skips_its_whole_invoice(
    database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    lines = SLICE.read_text(encoding="utf-8").splitlines(keepends=True)
    _corrupt(lines, 3, 3, "six")  # 536365, line 2 of 7
    _corrupt(lines, 11, 4, "2010-13-01 08:34:00")  # 536367
    _corrupt(lines, 32, 5, "1,5")  # 536370: a field too many
    _corrupt(lines, 143, 5, "free")  # C536379, the only line of customer 14527
    bad = tmp_path / "bad.csv"
    bad.write_bytes("".join(lines).encode().replace(b"MINI CASES", b"MINI \xff CASES"))

    result = await _import(database, tenant, bad)
    assert (result.bad_lines, result.skipped_invoices) == (5, 5)
    assert [(e.line, e.field) for e in result.errors] == [
        (3, "Quantity"),
        (11, "InvoiceDate"),
        (32, "line"),
        (143, "UnitPrice"),
        (203, "Description"),
    ]
    assert result.errors[0].message == "not a whole number: 'six' (invoice 536365 skipped)"
    assert "9 fields where the header has 8" in result.errors[2].message
    assert "not UTF-8" in result.errors[4].message
    events = await _events(database, tenant)
    for order_id in ("536365", "536367", "536370", "536379", "536412"):
        assert _orders(events, order_id) == []  # nothing of a bad invoice is stored
    assert len(_orders(events, "536366")) == 1
    # Nor an identify for the customers who had only a bad invoice: 12583, 14527, 17920.
    assert result.stored == EVENTS - 5 - 3

    fixed = await _import(database, tenant, SLICE)
    assert fixed.stored == 8 and len(await _events(database, tenant)) == EVENTS


async def test_an_invoice_too_large_for_one_message_keeps_its_order_and_revenue(
    database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    big = "".join(
        f"600001,{n},{'LONG DESCRIPTION ' * 6}{n},1,2011-01-05 10:00:00,1.25,20001,France\n"
        for n in range(10000, 10300)
    )
    small = "600002,22423,REGENCY CAKESTAND 3 TIER,1,2011-01-05 11:00:00,12.75,20001,France\n"
    path = _write(tmp_path / "big.csv", HEADER + big + small)
    result = await _import(database, tenant, path)
    assert (result.orders, result.skipped_invoices, result.trimmed_invoices) == (2, 0, 1)
    assert (result.stored, result.errors) == (3, [])
    assert "1 with line items left out" in result.line()
    events = await _events(database, tenant)
    assert [e.type for e in events] == ["identify", "track", "track"]
    [order] = _orders(events, "600001")
    properties = order.properties
    assert properties is not None
    assert properties["revenue"] == 375.0  # all 300 lines, whatever was left out
    kept = properties["products"]
    assert 100 < len(kept) < 300 and len(kept) + properties["products_omitted"] == 300
    assert [item["sku"] for item in kept] == [str(n) for n in range(10000, 10000 + len(kept))]
    [other] = _orders(events, "600002")
    assert other.properties is not None and other.properties["revenue"] == 12.75
    assert "products_omitted" not in other.properties

    again = await _import(database, tenant, path)
    assert (again.stored, again.trimmed_invoices) == (0, 1)  # the same message: stored once


async def test_odd_lines(database: Database, tenant: Tenant, tmp_path: Path) -> None:
    text = HEADER.replace("\n", ",Note\n") + (
        "700001,A1,Thing,2,2011-02-03 10:00:00,1.005,20002.0,Norway,\n"  # a float id
        "\n"  # blank lines are skipped
        "700002,A1,Thing,1,2011-02-03 11:00:00,1,20002,Norway,\n"
        "700002,A2,Other,1,2011-02-03 11:00:00,1,20003,Norway,\n"  # a second customer
        "700003,A1,,3,2011-10-30 01:30:00,0.333,20004,,\xff\n"  # the hour that happens twice
        "700004,A1,Thing,1,,1,20005,Norway,\n"
    )
    path = tmp_path / "odd.csv"
    path.write_bytes(text.encode("latin-1"))  # \xff stays one byte: not UTF-8
    result = await _import(database, tenant, path)
    assert (result.rows, result.orders, result.customers, result.skipped_invoices) == (
        5,
        2,
        2,
        2,
    )
    assert [(e.line, e.field, e.message) for e in result.errors] == [
        (5, "CustomerID", "20003 where line 4 has 20002 (invoice 700002 skipped)"),
        (7, "InvoiceDate", "not a date and time: '' (invoice 700004 skipped)"),
    ]
    events = await _events(database, tenant)
    [order] = _orders(events, "700001")
    assert order.user_id == "20002" and order.properties["revenue"] == 2.01  # type: ignore[index]
    [dawn] = _orders(events, "700003")  # the Note column, not read, may hold anything
    assert dawn.timestamp == datetime(2011, 10, 30, 0, 30, tzinfo=UTC)  # BST, the first 01:30
    assert dawn.properties["products"] == [  # type: ignore[index]
        {"product_id": "A1", "sku": "A1", "quantity": 3, "price": 0.333}
    ]
    assert [e.traits for e in events if e.user_id == "20004" and e.type == "identify"] == [{}]


async def test_a_file_of_another_shape_stores_nothing(
    database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    profiles = _write(tmp_path / "profiles.csv", "user_id,email\nu1,ann@example.com\n")
    with pytest.raises(InvalidInput, match="lacks InvoiceNo, StockCode") as raised:
        await _import(database, tenant, profiles)
    assert raised.value.errors[0].field == "header"
    with pytest.raises(InvalidInput, match="empty"):
        await _import(database, tenant, _write(tmp_path / "empty.csv", ""))
    with pytest.raises(NotFound):
        await import_orders(
            database, io.StringIO(HEADER), workspace_slug="nowhere", clock=SystemClock()
        )
    assert await _events(database, tenant) == []


async def test_a_truncated_gzip_keeps_what_came_before(
    database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    packed = gzip.compress(SLICE.read_bytes())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(packed[: len(packed) * 3 // 4])
    with pytest.raises(InvalidInput, match="importing the whole file again is safe"):
        await _import(database, tenant, cut)
    kept = len(await _events(database, tenant))
    assert 0 < kept < EVENTS
    whole = await _import(database, tenant, SLICE)
    assert whole.stored == EVENTS - kept


def _summary(output: str) -> tuple[int, ...]:
    found = re.search(
        r"([\d,]+) lines read \(([\d,]+) without a customer skipped, ([\d,]+) bad\), ([\d,]+)"
        r" customers, ([\d,]+) orders, ([\d,]+) refunds \(([\d,]+) invoices skipped,"
        r" [\d,]+ with line items left out\),"
        r" ([\d,]+) events stored \(([\d,]+) already there\) in [\d.]+ s",
        output,
    )
    assert found, output
    return tuple(int(group.replace(",", "")) for group in found.groups())


def test_cli_imports_once_per_workspace(clarion: CliRunner, tmp_path: Path) -> None:
    packed = tmp_path / "orders.csv.gz"
    packed.write_bytes(gzip.compress(SLICE.read_bytes()))
    first = run_cli(clarion, "import", "orders", str(packed))
    assert _summary(first.output) == (223, 4, 0, 22, 28, 4, 0, EVENTS, 0)
    again = run_cli(clarion, "import", "orders", str(SLICE))
    assert _summary(again.output)[-2:] == (0, EVENTS)
    run_cli(clarion, "workspaces", "create", "shop2")
    other = run_cli(clarion, "import", "orders", str(SLICE), "-w", "shop2")
    assert _summary(other.output)[-2:] == (EVENTS, 0)  # messageIds are per workspace


def test_cli_reports_bad_lines_and_files(clarion: CliRunner, tmp_path: Path) -> None:
    text = HEADER + "".join(
        f"8000{n:02},X{n},Thing,many,2011-01-01 10:00:00,1.0,1,Spain\n" for n in range(120)
    )
    output = run_cli(clarion, "import", "orders", str(_write(tmp_path / "bad.csv", text))).output
    assert _summary(output)[:3] == (120, 0, 120)
    assert "line 2: Quantity: not a whole number: 'many' (invoice 800000 skipped)" in output
    assert "... and 20 more problems" in output

    shapeless = _write(tmp_path / "people.csv", "name\nAnn\n")
    failed = run_cli(clarion, "import", "orders", str(shapeless), code=1).output
    assert "not an order-line CSV" in failed and "CustomerID" in failed
    run_cli(clarion, "import", "orders", str(tmp_path / "missing.csv"), code=2)
    nowhere = run_cli(clarion, "import", "orders", str(SLICE), "-w", "nowhere", code=1)
    assert "No workspace" in nowhere.output
