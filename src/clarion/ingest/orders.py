"""Importing order lines (the UCI Online Retail CSV shape) as Segment e-commerce events.

The file is read as a stream, plain or gzip (told by its first bytes), one line at a time;
consecutive lines with the same `InvoiceNo` are one invoice. Each invoice with a customer
becomes one `track`: `Order Completed`, or `Order Refunded` for a cancellation (`C` prefix,
`order_id` without the `C`, amounts made positive as Segment expects), and each customer one
`identify` with their `country`, sent before their first order. Lines without `CustomerID` are
counted and skipped. Times are UK local time (Europe/London), converted to UTC.

Every message goes through the ingestion path exactly as `POST /v1/batch` does
(`bulk.store_batches`: batches of at most 500 messages and 500 KB), so it is validated,
de-duplicated by messageId and handed to the pipeline by jobs enqueued in the storing
transaction. MessageIds are uuid5s of the invoice
number and its run (the n-th time its lines appear), or of the customer and country; never
of the workspace or the clock: importing the same file again stores nothing.

An invoice is all or nothing: one bad line (a number or date that does not parse, a wrong
field count, text that is not UTF-8) skips the whole invoice, and the bad line is reported
with its line number; so is an invoice the ingestion path refuses. An invoice with more
line items than one message holds (32 KB) keeps its order and full revenue with the first
items that fit, and `products_omitted` counting the others: order counts and revenue, what
segments and RFM read, stay whole.
A file without the expected columns raises InvalidInput before anything is stored.
"""

from __future__ import annotations

import csv
import gzip
import re
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.errors import FieldError, InvalidInput
from clarion.ingest import bulk
from clarion.ingest import service as ingest
from clarion.ingest.messages import MAX_ID_LENGTH

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
COLUMNS = tuple(HEADER.split(","))
CURRENCY = "GBP"
SHOP_ZONE = ZoneInfo("Europe/London")
MAX_REPORTED_ERRORS = 100
LIBRARY = {"name": "clarion-import-orders", "version": "1.0"}
# Fixed forever: changing it changes every messageId, and a re-import would store twice.
NAMESPACE = uuid.UUID("5b0c1f0e-8f5e-4d59-9d0c-6a1f3c2e7b41")

_GZIP_MAGIC = b"\x1f\x8b"
# At most 9 digits before the point: sums then stay well inside Decimal's 28-digit precision.
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")
_FLOAT_ID = re.compile(r"([0-9]+)\.0+")  # 17850.0: spreadsheets and pandas write ids as floats
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of undecodable bytes
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class LineError:
    """A problem with the file: the line it is on, the column at fault and why."""

    line: int
    field: str
    message: str


@dataclass(slots=True)
class OrdersResult:
    """What an import did; `errors` holds the first `max_errors` problems, in file order."""

    rows: int = 0
    no_customer: int = 0
    bad_lines: int = 0
    skipped_invoices: int = 0
    trimmed_invoices: int = 0  # stored with only the line items that fit in one message
    customers: int = 0
    orders: int = 0
    refunds: int = 0
    sent: int = 0
    stored: int = 0
    seconds: float = 0.0
    problems: int = 0
    errors: list[LineError] = field(default_factory=list)
    max_errors: int = MAX_REPORTED_ERRORS

    def report(self, error: LineError) -> None:
        """Count a problem, keeping it while fewer than `max_errors` are kept."""
        self.problems += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(error)

    def line(self) -> str:
        """The one-line summary `clarion import orders` prints."""
        return (
            f"orders import: {self.rows:,} lines read ({self.no_customer:,} without a customer"
            f" skipped, {self.bad_lines:,} bad), {self.customers:,} customers,"
            f" {self.orders:,} orders, {self.refunds:,} refunds"
            f" ({self.skipped_invoices:,} invoices skipped,"
            f" {self.trimmed_invoices:,} with line items left out), {self.stored:,} events stored"
            f" ({self.sent - self.stored:,} already there) in {self.seconds:.1f} s"
        )


def open_orders(path: Path) -> IO[str]:
    """The file as text, gunzipped when it starts as gzip does; undecodable bytes are kept
    as surrogates so that the line holding them is reported, not the whole file."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


async def import_orders(
    database: Database,
    text: Iterable[str],
    *,
    workspace_slug: str,
    clock: Clock,
    max_errors: int = MAX_REPORTED_ERRORS,
) -> OrdersResult:
    """Store the orders and refunds of an order-line CSV in the workspace's first source."""
    started = time.perf_counter()
    result = OrdersResult(max_errors=max_errors)
    reader = _InvoiceReader(text, result)  # reads the header: a wrong file fails here
    workspace_id, source_id = await bulk.first_source(
        database, workspace_slug=workspace_slug, clock=clock
    )
    outgoing = _messages(reader.invoices(), result)
    await _store(
        database, outgoing, result, workspace_id=workspace_id, source_id=source_id, clock=clock
    )
    result.errors.sort(key=lambda error: error.line)  # refusals arrive after later lines
    if reader.failure is not None:  # raised once what was read before it is stored
        raise reader.failure
    result.seconds = time.perf_counter() - started
    return result


# Reading lines into invoices.


@dataclass(frozen=True, slots=True)
class _Line:
    line: int
    stock_code: str
    description: str
    quantity: int
    price: Decimal
    timestamp: datetime
    customer: str
    country: str


@dataclass(slots=True)
class _Invoice:
    number: str
    occurrence: int  # 1 for the first run of lines with this number, 2 for a later one...
    first_line: int
    last_line: int
    lines: list[_Line] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


class _InvoiceReader:
    """Splits the CSV into runs of lines with one InvoiceNo, each line validated whole."""

    def __init__(self, text: Iterable[str], result: OrdersResult) -> None:
        self._csv = csv.reader(text)
        self._result = result
        self._line = 0  # physical lines consumed
        self._seen: dict[str, int] = {}  # invoice number -> runs of it so far
        self._dates: tuple[str | None, datetime] = (None, datetime.min)  # lines repeat it
        self.failure: InvalidInput | None = None  # the file could not be read to its end
        header = next(self._records(), None)
        if header is None:
            if self.failure is not None:
                raise self.failure
            raise _bad_file("The file is empty: it needs a header line.", "header", "empty file")
        self._index = _header_index(*header)
        self._width = len(header[1])

    def invoices(self) -> Iterator[_Invoice]:
        """The runs of lines, each holding its parsed lines with a customer and its errors."""
        current: _Invoice | None = None
        for line, cells in self._records():
            self._result.rows += 1
            number = self._invoice_number(cells)
            if current is None or (number is not None and number != current.number):
                if current is not None:
                    yield current
                name = number or ""
                self._seen[name] = occurrence = self._seen.get(name, 0) + 1
                current = _Invoice(name, occurrence, line, line)
            current.last_line = line
            parsed = self._parse(line, cells, number)
            if isinstance(parsed, LineError):
                self._result.bad_lines += 1
                current.errors.append(parsed)
            elif parsed is None:
                self._result.no_customer += 1
            elif current.lines and parsed.customer != current.lines[0].customer:
                self._result.bad_lines += 1
                first = current.lines[0]
                message = f"{parsed.customer} where line {first.line} has {first.customer}"
                current.errors.append(LineError(line, "CustomerID", message))
            else:
                current.lines.append(parsed)
        if current is not None and self.failure is None:  # a cut-off invoice may be partial
            yield current

    def _records(self) -> Iterator[tuple[int, list[str] | str]]:
        """(first line, cells or why they cannot be read) per record, blank lines skipped."""
        while True:
            start = self._line + 1
            try:
                cells = next(self._csv)
            except StopIteration:
                return
            except csv.Error as exc:
                self._line = self._csv.line_num
                yield start, f"malformed CSV: {exc}"
                continue
            except (EOFError, OSError, zlib.error) as exc:  # a damaged or truncated gzip file
                self.failure = _bad_file(
                    f"The file cannot be read after line {self._line}: {exc}. The invoices"
                    " before it were imported; importing the whole file again is safe.",
                    "file",
                    "unreadable",
                )
                return
            self._line = self._csv.line_num
            if any(cells):
                yield start, cells

    def _invoice_number(self, cells: list[str] | str) -> str | None:
        index = self._index["InvoiceNo"]
        if isinstance(cells, str) or len(cells) <= index or not cells[index].strip():
            return None  # unknown: the line counts as part of the invoice in progress
        return cells[index].strip()

    def _parse(
        self, line: int, cells: list[str] | str, number: str | None
    ) -> _Line | LineError | None:
        """The line, None without a customer, or the first thing wrong with it."""
        if isinstance(cells, str):
            return LineError(line, "line", cells)
        if len(cells) != self._width:
            return LineError(
                line, "line", f"{len(cells)} fields where the header has {self._width}"
            )
        cell = {name: cells[index] for name, index in self._index.items()}
        text = "".join(cell.values())  # columns the import does not read may hold anything
        if "\x00" in text or (not text.isascii() and _NOT_UTF8.search(text)):
            column = next(name for name, value in cell.items() if _bad_text(value))
            return LineError(line, column, "contains a NUL character or text that is not UTF-8")
        customer = cell["CustomerID"].strip()
        if not customer:
            return None
        if number is None:
            return LineError(line, "InvoiceNo", "is empty")
        if float_id := _FLOAT_ID.fullmatch(customer):
            customer = float_id.group(1)
        if len(customer) > MAX_ID_LENGTH:
            return LineError(line, "CustomerID", f"longer than {MAX_ID_LENGTH} characters")
        stock_code = cell["StockCode"].strip()
        if not stock_code:
            return LineError(line, "StockCode", "is empty")
        quantity = cell["Quantity"].strip()
        if not _INTEGER.fullmatch(quantity):
            return LineError(line, "Quantity", f"not a whole number: {quantity!r}")
        price = cell["UnitPrice"].strip()
        if not _DECIMAL.fullmatch(price):
            return LineError(line, "UnitPrice", f"not a number: {price!r}")
        timestamp = self._timestamp(cell["InvoiceDate"].strip())
        if timestamp is None:
            return LineError(
                line, "InvoiceDate", f"not a date and time: {cell['InvoiceDate'].strip()!r}"
            )
        return _Line(
            line,
            stock_code,
            cell["Description"].strip(),
            int(quantity),
            Decimal(price),
            timestamp,
            customer,
            cell["Country"].strip(),
        )

    def _timestamp(self, text: str) -> datetime | None:
        """UTC time of an InvoiceDate; one without an offset is UK local time."""
        if text == self._dates[0]:
            return self._dates[1]
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            return None
        # fold=0: an hour that happens twice (October) is taken as the first one.
        at = (local if local.tzinfo else local.replace(tzinfo=SHOP_ZONE)).astimezone(UTC)
        self._dates = (text, at)
        return at


def _header_index(line: int, cells: list[str] | str) -> dict[str, int]:
    if isinstance(cells, str):
        raise _bad_file(f"The header (line {line}) cannot be read: {cells}.", "header", cells)
    found = {cell.strip(): index for index, cell in reversed(list(enumerate(cells)))}
    missing = [name for name in COLUMNS if name not in found]
    if missing:
        raise _bad_file(
            f"The file is not an order-line CSV: its header lacks {', '.join(missing)}"
            f" (expected {HEADER}).",
            "header",
            f"missing {', '.join(missing)}",
        )
    return {name: found[name] for name in COLUMNS}


def _bad_file(detail: str, field_name: str, message: str) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(field_name, message)])


def _bad_text(cell: str) -> bool:
    return "\x00" in cell or bool(_NOT_UTF8.search(cell))


# Invoices into messages.


class _Outgoing(NamedTuple):
    message: bytes
    kind: str  # "order", "refund" or "customer": what to count once it is accepted
    line: int  # where it comes from, to report a refusal, with what it is
    what: str


def _messages(invoices: Iterable[_Invoice], result: OrdersResult) -> Iterator[_Outgoing]:
    """An identify before each customer's first order, then a track per invoice."""
    identified: set[str] = set()
    for invoice in invoices:
        if invoice.errors:
            result.skipped_invoices += 1
            for error in invoice.errors:
                note = f" (invoice {invoice.number} skipped)" if invoice.number else ""
                result.report(LineError(error.line, error.field, error.message + note))
            continue
        if not invoice.lines:
            continue
        first = invoice.lines[0]
        if first.customer not in identified:
            identified.add(first.customer)
            yield _Outgoing(_identify(first), "customer", first.line, f"customer {first.customer}")
        refund = invoice.number.startswith("C")
        what = f"invoice {invoice.number} (lines {invoice.first_line}-{invoice.last_line})"
        kind = "refund" if refund else "order"
        message, omitted = _track(invoice, refund=refund)
        result.trimmed_invoices += omitted > 0
        yield _Outgoing(message, kind, invoice.first_line, what)


def _identify(line: _Line) -> bytes:
    """The customer's identify, dated at their first order, with their country."""
    traits = {"country": line.country} if line.country else {}
    message_id = uuid.uuid5(NAMESPACE, f"identify/{line.customer}/{line.country}")
    return orjson.dumps(
        {
            "type": "identify",
            "messageId": str(message_id),
            "userId": line.customer,
            "timestamp": _iso(line.timestamp),
            "traits": traits,
            "context": {"library": LIBRARY},
        }
    )


def _track(invoice: _Invoice, *, refund: bool) -> tuple[bytes, int]:
    """`Order Completed` (or `Order Refunded`) for an invoice, as Segment's e-commerce spec
    has it: amounts and quantities positive for a refund, `order_id` without the `C`; and
    how many line items were left out of `products` to fit in one message."""
    sign = -1 if refund else 1
    revenue = sum((line.quantity * line.price for line in invoice.lines), Decimal(0)) * sign
    products = []
    for line in invoice.lines:
        product: dict[str, object] = {"product_id": line.stock_code, "sku": line.stock_code}
        if line.description:
            product["name"] = line.description
        product["quantity"] = line.quantity * sign
        product["price"] = float(line.price)
        products.append(product)
    # The n-th run of an invoice number is a message of its own: unique, and stable per file.
    message_id = uuid.uuid5(NAMESPACE, f"invoice/{invoice.number}/{invoice.occurrence}")
    message: dict[str, Any] = {
        "type": "track",
        "event": "Order Refunded" if refund else "Order Completed",
        "messageId": str(message_id),
        "userId": invoice.lines[0].customer,
        "timestamp": _iso(min(line.timestamp for line in invoice.lines)),
        "properties": {
            "order_id": invoice.number[1:] if refund else invoice.number,
            "revenue": float(revenue.quantize(_CENT, rounding=ROUND_HALF_UP)),
            "currency": CURRENCY,
            "products": products,
        },
        "context": {"library": LIBRARY},
    }
    data = orjson.dumps(message)
    if len(data) <= ingest.MAX_MESSAGE_BYTES:
        return data, 0
    # Too many items for one message: the most that fit (found by halving), and the count
    # of the others.
    fits, fails = 0, len(products)
    while fails - fits > 1:
        middle = (fits + fails) // 2
        if len(_with_items(message, products, middle)) <= ingest.MAX_MESSAGE_BYTES:
            fits = middle
        else:
            fails = middle
    return _with_items(message, products, fits), len(products) - fits


def _with_items(message: dict[str, Any], products: list[dict[str, object]], kept: int) -> bytes:
    properties = {
        **message["properties"],
        "products": products[:kept],
        "products_omitted": len(products) - kept,
    }
    return orjson.dumps({**message, "properties": properties})


def _iso(at: datetime) -> str:
    """`2010-12-01T08:26:00.000Z`: UTC, milliseconds, as Segment's libraries send it."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Storing, as `/v1/batch` does.


async def _store(
    database: Database,
    outgoing: Iterable[_Outgoing],
    result: OrdersResult,
    *,
    workspace_id: int,
    source_id: uuid.UUID,
    clock: Clock,
) -> None:
    """Accept and store the messages batch by batch; refusals are reported, not raised."""
    result.stored += await bulk.store_batches(
        database,
        outgoing,
        message=lambda item: item.message,
        accepted=lambda batch, accepted: _count(batch, accepted, result),
        workspace_id=workspace_id,
        source_id=source_id,
        clock=clock,
    )


def _count(batch: list[_Outgoing], accepted: ingest.Accepted, result: OrdersResult) -> None:
    refused = {error.index: error for error in accepted.rejected}
    for index, item in enumerate(batch):
        error = refused.get(index)
        if error is not None:
            reason = f"{error.field}: {error.message}" if error.field else error.message
            result.skipped_invoices += item.kind != "customer"
            result.report(LineError(item.line, "invoice", f"{item.what} not stored: {reason}"))
            continue
        result.sent += 1
        result.customers += item.kind == "customer"
        result.orders += item.kind == "order"
        result.refunds += item.kind == "refund"
